"""A drop-in fast path for sb3-contrib's :class:`~sb3_contrib.RecurrentPPO`.

Why this exists
---------------
Stock ``RecurrentActorCriticPolicy._process_sequence`` runs the LSTM one time
step at a time, in a Python loop, as soon as *any* sequence of a minibatch
contains an episode start (so that the LSTM state can be reset in the middle of
a sequence).  With short episodes nearly every minibatch contains a start, so
training pays a Python-level loop of ``max_sequence_length`` tiny LSTM calls
(forward and backward, for the actor and for the critic LSTM) per minibatch.

That generality is not needed.  ``RecurrentRolloutBuffer._get_samples`` builds
its training sequences with ``create_sequencers``, which starts a new sequence
at every episode start (``seq_start = episode_starts | env_change``), and pads
sequences only at their *end* with ``episode_starts == 0``.  Hence, in training
minibatches an episode start can only be at the *first* step of a sequence.
During data collection (``forward``/``predict``/the bootstrap
``predict_values``) the sequence length is 1, so the same holds trivially.

A start at the first step means "use a zero initial state for this sequence",
so we zero those sequences' initial ``(h, c)`` and make ONE ``nn.LSTM`` call
over the whole ``(time, n_seq, features)`` block.  This is the same computation
as the stock loop (the stock loop itself takes the single-call branch whenever
no start is present).  If a caller passes a start at a time index > 0 (a custom
buffer, a hand-built batch, ...), we detect it with one cheap reduction and
fall back to the stock loop, so the fast policy is always equivalent to the
stock one.

The rollout buffer's minibatch construction is the second hot spot: stock
``RecurrentRolloutBuffer._get_samples`` cuts every minibatch into sequences and
pads them with one ``torch.tensor`` per sequence per field (a Python loop over
sequences).  :class:`FastRecurrentRolloutBuffer` (and its dict-observation twin)
computes each step's (sequence id, position) once per minibatch with numpy and
scatters every field into a zero-padded ``(n_seq * max_len, ...)`` array in
one vectorised assignment -- bit-for-bit the same samples as stock.

Data collection is the third: stock ``forward`` per environment step costs
some 80 small ops and ~30 module calls.  :class:`RolloutStep` applies the same
weights with the same kernels and plain tensor ops (bit-identical outputs), and
:meth:`FastRecurrentPPO.collect_rollouts` writes each step straight into the
rollout buffer's arrays.

Everything else (losses, minibatches, save format) is stock sb3-contrib.
"""

from __future__ import annotations

import io
import math
import pathlib
from collections.abc import Generator, Iterator
from typing import Any, ClassVar, NamedTuple, TypeVar, cast

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.policies import (
    RecurrentActorCriticCnnPolicy,
    RecurrentActorCriticPolicy,
    RecurrentMultiInputActorCriticPolicy,
)
from sb3_contrib.common.recurrent.type_aliases import (
    RecurrentDictRolloutBufferSamples,
    RecurrentRolloutBufferSamples,
    RNNStates,
)
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.type_aliases import GymEnv
from stable_baselines3.common.utils import explained_variance
from stable_baselines3.common.vec_env import VecEnv, VecNormalize
from torch import nn

from agents.rl2.kickstart import Kickstart, distillation_loss, evaluate_actions_and_mean

__all__ = [
    "FastCnnLstmPolicy",
    "FastMlpLstmPolicy",
    "FastMultiInputLstmPolicy",
    "FastRecurrentDictRolloutBuffer",
    "FastRecurrentActorCriticCnnPolicy",
    "FastRecurrentActorCriticPolicy",
    "FastRecurrentMultiInputActorCriticPolicy",
    "FastRecurrentPPO",
    "FastRecurrentRolloutBuffer",
    "VectorSequencer",
    "process_sequence_fast",
]

SelfFastRecurrentPPO = TypeVar("SelfFastRecurrentPPO", bound="FastRecurrentPPO")


def process_sequence_fast(
    features: th.Tensor,
    lstm_states: tuple[th.Tensor, th.Tensor],
    episode_starts: th.Tensor,
    lstm: nn.LSTM,
) -> tuple[th.Tensor, tuple[th.Tensor, th.Tensor]]:
    """Run ``lstm`` over padded sequences with one call when that is exact.

    Same contract as ``RecurrentActorCriticPolicy._process_sequence``:

    :param features: ``(n_seq * seq_len, features_dim)``, sequence-major (all
        steps of sequence 0, then of sequence 1, ...), as produced by the
        recurrent rollout buffer (``seq_len == 1`` during data collection).
    :param lstm_states: ``(h, c)``, each ``(n_layers, n_seq, hidden)``: the
        state *before* the first step of each sequence.
    :param episode_starts: ``(n_seq * seq_len,)``; 1.0 where the step is the
        first of a new episode (the state must be reset before it).
    :param lstm: the LSTM module (actor or critic).
    :return: LSTM output ``(n_seq * seq_len, hidden)`` and the final ``(h, c)``.

    A start at time index 0 is handled by multiplying the initial state by
    ``1 - start`` -- exactly what the stock loop does at its first iteration,
    so values *and* gradients w.r.t. the initial state match.  A start at any
    later time index cannot be expressed as an initial-state reset, so we
    delegate to the stock loop (never taken with the stock rollout buffer).
    """
    n_seq = lstm_states[0].shape[1]
    # (n_seq * seq_len,) -> (seq_len, n_seq)
    starts = episode_starts.reshape((n_seq, -1)).swapaxes(0, 1)
    if starts.shape[0] > 1 and bool(starts[1:].any()):
        # Mid-sequence reset: only the per-step loop is exact.
        # sb3-contrib annotates its return as two tensors; the second is the (h, c) pair.
        return RecurrentActorCriticPolicy._process_sequence(  # type: ignore[return-value]
            features, lstm_states, episode_starts, lstm
        )

    # (n_seq * seq_len, F) -> (n_seq, seq_len, F) -> (seq_len, n_seq, F)
    features_sequence = features.reshape((n_seq, -1, lstm.input_size)).swapaxes(0, 1)
    keep = (1.0 - starts[0]).view(1, n_seq, 1)
    initial_states = (keep * lstm_states[0], keep * lstm_states[1])
    lstm_output, final_states = lstm(features_sequence, initial_states)
    # (seq_len, n_seq, H) -> (n_seq * seq_len, H), sequence-major like the input
    lstm_output = th.flatten(lstm_output.transpose(0, 1), start_dim=0, end_dim=1)
    return lstm_output, final_states


class FastRecurrentActorCriticPolicy(RecurrentActorCriticPolicy):
    """``RecurrentActorCriticPolicy`` whose LSTM pass avoids the Python time loop.

    Only ``_process_sequence`` changes (see :func:`process_sequence_fast`); the
    parameters, ``state_dict`` layout and every other method are the stock ones,
    so weights are interchangeable with the stock policy.

    (Running the actor's and the critic's LSTM as one block-diagonal LSTM of hidden size
    2H was measured on the default ``metaopt-train`` shapes -- 11 features, H=64, 17
    sequences of 100 steps -- and is slower, forward + backward 21 ms vs 15 ms for two calls:
    the doubled recurrent matmul costs more than the saved per-step overhead.)
    """

    @staticmethod
    def _process_sequence(  # type: ignore[override]  # stock annotates the states as one Tensor; it is (h, c)
        features: th.Tensor,
        lstm_states: tuple[th.Tensor, th.Tensor],
        episode_starts: th.Tensor,
        lstm: nn.LSTM,
    ) -> tuple[th.Tensor, tuple[th.Tensor, th.Tensor]]:
        """Single-call LSTM pass, exact fallback to the stock loop for mid-sequence starts."""
        return process_sequence_fast(features, lstm_states, episode_starts, lstm)


class FastRecurrentActorCriticCnnPolicy(FastRecurrentActorCriticPolicy, RecurrentActorCriticCnnPolicy):
    """CNN variant: stock ``RecurrentActorCriticCnnPolicy`` constructor, fast LSTM pass."""


class FastRecurrentMultiInputActorCriticPolicy(FastRecurrentActorCriticPolicy, RecurrentMultiInputActorCriticPolicy):
    """Dict-observation variant: stock constructor, fast LSTM pass."""


FastMlpLstmPolicy = FastRecurrentActorCriticPolicy
FastCnnLstmPolicy = FastRecurrentActorCriticCnnPolicy
FastMultiInputLstmPolicy = FastRecurrentMultiInputActorCriticPolicy

# Exact stock classes -> fast twins.  Used so that passing a stock policy class
# (or loading a checkpoint saved by stock RecurrentPPO) still gets the fast
# path.  Only exact types are mapped: a user subclass may override
# ``_process_sequence`` itself and must be left alone.
_FAST_TWINS: dict[type[BasePolicy], type[BasePolicy]] = {
    RecurrentActorCriticPolicy: FastRecurrentActorCriticPolicy,
    RecurrentActorCriticCnnPolicy: FastRecurrentActorCriticCnnPolicy,
    RecurrentMultiInputActorCriticPolicy: FastRecurrentMultiInputActorCriticPolicy,
}


class VectorSequencer:
    """Vectorised replacement for sb3-contrib's ``create_sequencers``/``pad``/``pad_and_flatten``.

    Same sequence rule as stock: a new sequence starts at every episode start,
    at every env change, and at the first step of the minibatch; a sequence
    ends just before the next start.  Instead of slicing and padding each
    sequence separately, each step's flat destination index
    ``seq_id * max_length + position`` is computed once, and every field is
    scattered into a zero-filled ``(n_seq * max_length, ...)`` array with one
    numpy assignment.

    :param episode_starts: ``(batch, 1)`` or ``(batch,)`` episode-start flags of the minibatch.
    :param env_change: same shape, 1 where the step is the first of its env's rollout.
    :param device: torch device of the returned tensors.
    """

    def __init__(self, episode_starts: np.ndarray, env_change: np.ndarray, device: th.device) -> None:
        seq_start = np.logical_or(episode_starts, env_change).reshape(-1)
        seq_start[0] = True
        n_steps = seq_start.shape[0]
        self.seq_start_indices = np.flatnonzero(seq_start)
        self.n_seq = len(self.seq_start_indices)
        lengths = np.diff(np.append(self.seq_start_indices, n_steps))
        self.max_length = int(lengths.max())
        seq_id = np.cumsum(seq_start) - 1
        position = np.arange(n_steps) - self.seq_start_indices[seq_id]
        self.flat_index = seq_id * self.max_length + position
        self.device = device

    def pad(self, tensor: np.ndarray, padding_value: float = 0.0) -> th.Tensor:
        """``(batch, *shape)`` -> ``(n_seq, max_length, *shape)``, padded at the end of each sequence."""
        shape = tensor.shape[1:]
        padded_size = self.n_seq * self.max_length
        if padding_value == 0.0:
            out = np.zeros((padded_size, *shape), dtype=tensor.dtype)
        else:
            out = np.full((padded_size, *shape), padding_value, dtype=tensor.dtype)
        out[self.flat_index] = tensor
        return th.as_tensor(out, device=self.device).reshape((self.n_seq, self.max_length, *shape))

    def pad_and_flatten(self, tensor: np.ndarray, padding_value: float = 0.0) -> th.Tensor:
        """``(batch, 1)`` -> ``(n_seq * max_length,)``, like stock ``pad_and_flatten``."""
        return self.pad(tensor, padding_value).flatten()

    def mask(self, dtype: np.dtype) -> th.Tensor:
        """1 on real steps, 0 on padding: ``(n_seq * max_length,)``."""
        out = np.zeros(self.n_seq * self.max_length, dtype=dtype)
        out[self.flat_index] = 1
        return th.as_tensor(out, device=self.device)


def _fast_common_fields(
    buffer: RecurrentRolloutBuffer | RecurrentDictRolloutBuffer,
    batch_inds: np.ndarray,
    env_change: np.ndarray,
) -> tuple[VectorSequencer, dict[str, Any]]:
    """Everything of a recurrent minibatch except the observations (shared by both buffers)."""
    seq = VectorSequencer(buffer.episode_starts[batch_inds], env_change[batch_inds], buffer.device)
    # Keep the attributes stock sets, for code that inspects them after sampling.
    buffer.seq_start_indices = seq.seq_start_indices  # type: ignore[assignment]  # sb3-contrib declares it as None
    buffer.pad, buffer.pad_and_flatten = seq.pad, seq.pad_and_flatten

    padded_batch_size = seq.n_seq * seq.max_length
    # Stock: states[batch_inds][seq_start_indices] == states[batch_inds[seq_start_indices]]
    start_inds = batch_inds[seq.seq_start_indices]

    def states(array: np.ndarray) -> th.Tensor:
        # (n_envs * n_steps, n_layers, dim) -> (n_seq, n_layers, dim) -> (n_layers, n_seq, dim)
        return buffer.to_torch(array[start_inds].swapaxes(0, 1)).contiguous()

    lstm_states = RNNStates(
        (states(buffer.hidden_states_pi), states(buffer.cell_states_pi)),
        (states(buffer.hidden_states_vf), states(buffer.cell_states_vf)),
    )
    fields = {
        "actions": seq.pad(buffer.actions[batch_inds]).reshape((padded_batch_size, *buffer.actions.shape[1:])),
        "old_values": seq.pad_and_flatten(buffer.values[batch_inds]),
        "old_log_prob": seq.pad_and_flatten(buffer.log_probs[batch_inds]),
        "advantages": seq.pad_and_flatten(buffer.advantages[batch_inds]),
        "returns": seq.pad_and_flatten(buffer.returns[batch_inds]),
        "lstm_states": lstm_states,
        "episode_starts": seq.pad_and_flatten(buffer.episode_starts[batch_inds]),
        "mask": seq.mask(buffer.returns.dtype),
    }
    return seq, fields


class KickstartSamples(NamedTuple):
    """A recurrent minibatch with the teachers' labels ``teacher: (N, 2)`` (action, weight) of kickstarting."""

    observations: th.Tensor
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    lstm_states: RNNStates
    episode_starts: th.Tensor
    mask: th.Tensor
    teacher: th.Tensor


class FastRecurrentRolloutBuffer(RecurrentRolloutBuffer):
    """``RecurrentRolloutBuffer`` with vectorised minibatch padding (identical samples).

    Only ``_get_samples`` changes; storage, ``get`` (and so the random split
    point it draws), GAE and the sample layout are stock.
    """

    teacher: np.ndarray | None = None
    """``(n_steps, n_envs, 2)`` teacher labels (action, weight) of kickstarting, or None
    (:mod:`agents.rl2.kickstart`); :class:`FastRecurrentPPO` sets and fills it each rollout, the
    minibatches carry it padded."""

    def get(self, batch_size: int | None = None) -> Generator[RecurrentRolloutBufferSamples, None, None]:  # type: ignore[override]
        if self.teacher is not None and not self.generator_ready:
            self.teacher = self.swap_and_flatten(self.teacher)
        yield from super().get(batch_size)

    def _get_samples(  # type: ignore[override]
        self,
        batch_inds: np.ndarray,
        env_change: np.ndarray,
        env: VecNormalize | None = None,
    ) -> RecurrentRolloutBufferSamples:
        seq, fields = _fast_common_fields(self, batch_inds, env_change)
        padded_batch_size = seq.n_seq * seq.max_length
        observations = seq.pad(self.observations[batch_inds]).reshape((padded_batch_size, *self.obs_shape))
        if self.teacher is not None:
            teacher = seq.pad(self.teacher[batch_inds]).reshape((padded_batch_size, 2))
            return KickstartSamples(observations=observations, **fields, teacher=teacher)  # type: ignore[return-value]
        return RecurrentRolloutBufferSamples(observations=observations, **fields)


class FastRecurrentDictRolloutBuffer(RecurrentDictRolloutBuffer):
    """``RecurrentDictRolloutBuffer`` with vectorised minibatch padding (identical samples)."""

    def _get_samples(  # type: ignore[override]
        self,
        batch_inds: np.ndarray,
        env_change: np.ndarray,
        env: VecNormalize | None = None,
    ) -> RecurrentDictRolloutBufferSamples:
        seq, fields = _fast_common_fields(self, batch_inds, env_change)
        padded_batch_size = seq.n_seq * seq.max_length
        observations = {
            key: seq.pad(obs[batch_inds]).reshape((padded_batch_size, *self.obs_shape[key]))
            for key, obs in self.observations.items()
        }
        return RecurrentDictRolloutBufferSamples(observations=observations, **fields)


# Exact stock buffer classes -> fast twins (a user subclass is left alone).
_FAST_BUFFERS: dict[type[RolloutBuffer], type[RecurrentRolloutBuffer] | type[RecurrentDictRolloutBuffer]] = {
    RecurrentRolloutBuffer: FastRecurrentRolloutBuffer,
    RecurrentDictRolloutBuffer: FastRecurrentDictRolloutBuffer,
}


_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))
# Bound at import: tests swap the module's ``RecurrentActorCriticPolicy`` to count fallback calls.
_RECURRENT_POLICY = RecurrentActorCriticPolicy


def _lean_layers(net: nn.Module) -> list[tuple[th.Tensor, th.Tensor | None] | nn.Module]:
    """A ``Sequential``'s layers: ``(weight, bias)`` for each ``nn.Linear`` (applied functionally), else the module."""
    return [(m.weight, m.bias) if type(m) is nn.Linear else m for m in net.children()]


def _apply_layers(x: th.Tensor, layers: list[tuple[th.Tensor, th.Tensor | None] | nn.Module]) -> th.Tensor:
    for layer in layers:
        x = th.nn.functional.linear(x, *layer) if isinstance(layer, tuple) else layer(x)
    return x


class RolloutStep:
    """The policy's data-collection step without the module and ``Distribution`` machinery.

    Stock ``forward`` per environment step goes through ~30 ``nn.Module`` calls, the LSTM
    wrapper's argument checks, ``_process_sequence``'s reshapes and a torch ``Normal`` (with
    argument validation): on a small net that Python overhead is most of a step.  Here the same
    weights are applied with the same kernels and plain tensor ops: one ``torch.lstm`` per LSTM
    (what ``nn.LSTM`` calls), the MLPs' ``linear`` and activations, the heads, and the action
    drawn from the torch RNG exactly as ``DiagGaussianDistribution`` draws it
    (``mean + normal_() * std``, one ``normal_`` of the actions' shape; the log-prob is
    ``Normal.log_prob``'s formula).  The same ops on the same inputs: the outputs are
    bit-identical to stock ``forward`` (tested), so the rollouts of stock, of the previous
    ``FastRecurrentPPO`` and of this one are the same numbers.

    Measured and not taken: the actor and the critic as ONE block-diagonal network (one LSTM
    of hidden size 2H, MLP layers of twice the width) is no faster on the default shapes (the
    doubled matmuls cost what the saved calls save), and running the one-step LSTM without
    oneDNN is ~10% faster per step but changes the last bits.

    It reads the policy's parameters (no copy), so it stays valid across updates.
    :meth:`build` returns ``None`` for layouts it does not cover (a shared or missing critic
    LSTM, a non-shared or non-flatten features extractor, non-Gaussian actions, gSDE, squashed
    actions, non-Box observations); the caller then uses the stock loop.
    """

    def __init__(self, policy: RecurrentActorCriticPolicy) -> None:
        assert policy.lstm_critic is not None
        self.policy = policy
        self.lstms = (policy.lstm_actor, policy.lstm_critic)
        self.pi_layers = _lean_layers(policy.mlp_extractor.policy_net)
        self.vf_layers = _lean_layers(policy.mlp_extractor.value_net)
        self.action_net, self.value_net = cast(nn.Linear, policy.action_net), policy.value_net

    @classmethod
    def build(cls, policy: BasePolicy) -> RolloutStep | None:
        """The lean step of ``policy``, or ``None`` if its layout is not covered."""
        if not (
            isinstance(policy, _RECURRENT_POLICY)
            and policy.lstm_critic is not None
            and not policy.shared_lstm
            and policy.share_features_extractor
            and type(policy.features_extractor) is FlattenExtractor
            and type(policy.action_dist) is DiagGaussianDistribution
            and not policy.use_sde
            and not policy.squash_output
            and isinstance(policy.observation_space, spaces.Box)
            and type(policy.action_net) is nn.Linear
            and type(policy.value_net) is nn.Linear
            and all(not lstm.batch_first and not lstm.bidirectional for lstm in (policy.lstm_actor, policy.lstm_critic))
        ):
            return None
        return cls(policy)

    def _lstm(
        self, index: int, features: th.Tensor, state: tuple[th.Tensor, ...], keep: th.Tensor
    ) -> tuple[th.Tensor, tuple[th.Tensor, th.Tensor]]:
        lstm = self.lstms[index]
        output, h, c = th.lstm(
            features.unsqueeze(0),
            (keep * state[0], keep * state[1]),  # the stock reset: (1 - start) * state
            cast(list[th.Tensor], lstm._flat_weights),
            lstm.bias,
            lstm.num_layers,
            0.0,
            False,
            False,
            False,
        )
        return output[0], (h, c)

    def _features(self, obs: th.Tensor) -> th.Tensor:
        return obs.float().flatten(1)  # preprocess_obs of a Box + FlattenExtractor

    def step(
        self, obs: th.Tensor, states: RNNStates, episode_starts: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, RNNStates]:
        """``(actions, values, log_prob, states)``, as stock ``forward(obs, states, episode_starts)``."""
        features = self._features(obs)
        keep = (1.0 - episode_starts).view(1, -1, 1)
        latent_pi, state_pi = self._lstm(0, features, states.pi, keep)
        latent_vf, state_vf = self._lstm(1, features, states.vf, keep)
        mean = th.nn.functional.linear(
            _apply_layers(latent_pi, self.pi_layers), self.action_net.weight, self.action_net.bias
        )
        values = th.nn.functional.linear(
            _apply_layers(latent_vf, self.vf_layers), self.value_net.weight, self.value_net.bias
        )
        std = th.ones_like(mean) * self.policy.log_std.exp()
        actions = mean + th.empty_like(mean).normal_() * std
        log_prob = (-((actions - mean) ** 2) / (2 * std**2) - std.log() - _LOG_SQRT_2PI).sum(dim=1)
        return actions, values, log_prob, RNNStates(state_pi, state_vf)

    def values(self, obs: th.Tensor, state: tuple[th.Tensor, ...], episode_starts: th.Tensor) -> th.Tensor:
        """The critic's values ``(B, 1)``, as stock ``predict_values``; no RNG draw."""
        keep = (1.0 - episode_starts).view(1, -1, 1)
        latent_vf, _ = self._lstm(1, self._features(obs), state, keep)
        return th.nn.functional.linear(
            _apply_layers(latent_vf, self.vf_layers), self.value_net.weight, self.value_net.bias
        )


class FastRecurrentPPO(RecurrentPPO):
    """``RecurrentPPO`` using the fast policies and rollout buffers; otherwise the stock algorithm.

    ``FastRecurrentPPO("MlpLstmPolicy", env, ...)`` accepts every argument of
    ``RecurrentPPO`` plus ``torch_threads``.  With the same seed it performs the
    same rollouts and updates as stock ``RecurrentPPO`` (up to float rounding
    order inside the LSTM kernels of the training minibatches; the rollout step
    itself is bit-identical).

    For ~2% more on CPU pass ``policy_kwargs={"optimizer_kwargs": {"fused": True,
    "eps": 1e-5}}`` (fused Adam; the ``eps`` SB3 sets for Adam only when no
    ``optimizer_kwargs`` are given).  It is not the default: fused Adam rounds
    differently, so a run would no longer reproduce the previous trajectories.

    :param torch_threads: if given, ``torch.set_num_threads(torch_threads)`` is
        called before the model is built.  This is process-global (torch has no
        per-model setting), which is why the default leaves it unchanged.  For
        the small LSTMs used in RL, 1 thread is usually fastest on CPU: the
        per-op work is too small to amortise intra-op parallelism.  The value
        is not saved with the model (it describes the machine, not the agent);
        pass it again to :meth:`load`.

    Kickstarting (:mod:`agents.rl2.kickstart`): set ``model.kickstart = Kickstart(...)`` and the
    rollouts record the teachers' actions, and ``train`` adds the weighted distillation term to the
    loss (``train/kickstart_loss``, ``train/kickstart_weight``); with ``kickstart = None`` (the
    default) rollouts and updates are exactly the ones described above.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpLstmPolicy": FastMlpLstmPolicy,
        "CnnLstmPolicy": FastCnnLstmPolicy,
        "MultiInputLstmPolicy": FastMultiInputLstmPolicy,
    }

    def __init__(
        self,
        policy: str | type[RecurrentActorCriticPolicy],
        env: GymEnv | str,
        *args: Any,
        torch_threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        _apply_torch_threads(torch_threads)
        self.torch_threads = torch_threads
        self.kickstart: Kickstart | None = None
        super().__init__(policy, env, *args, **kwargs)

    def _setup_model(self) -> None:
        """Swap an exact stock policy class (and rollout buffer) for its fast twin, then build as usual.

        ``load`` restores ``policy_class`` from the checkpoint before calling
        this, so a checkpoint written by stock ``RecurrentPPO`` also runs fast.
        """
        self.policy_class = _FAST_TWINS.get(self.policy_class, self.policy_class)
        super()._setup_model()
        # Stock picks the buffer class inside ``_setup_model`` (no hook), so
        # rebuild the (still empty) buffer as its fast twin with the same
        # arguments.  Building a buffer draws no random numbers.
        old = self.rollout_buffer
        fast_buffer_cls = _FAST_BUFFERS.get(type(old))
        if fast_buffer_cls is not None and isinstance(old, (RecurrentRolloutBuffer, RecurrentDictRolloutBuffer)):
            self.rollout_buffer = fast_buffer_cls(
                old.buffer_size,
                old.observation_space,
                old.action_space,
                old.hidden_state_shape,
                old.device,
                gamma=old.gamma,
                gae_lambda=old.gae_lambda,
                n_envs=old.n_envs,
            )

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """Stock ``collect_rollouts`` with the policy step of :class:`RolloutStep` and direct buffer writes.

        Same steps, callbacks, timeout bootstrap, buffer contents and RNG draws as stock (the
        same bits on the same weights); falls back to the stock loop for what it does not
        cover (see :meth:`RolloutStep.build`, dict observations).
        """
        lean = RolloutStep.build(self.policy) if type(rollout_buffer) is FastRecurrentRolloutBuffer else None
        if lean is None or self._last_obs is None or not isinstance(self.action_space, spaces.Box):
            if self.kickstart is not None:
                raise ValueError(
                    "kickstarting needs FastRecurrentPPO's own rollout loop: MlpLstmPolicy, a Box action space "
                    "and the fast rollout buffer"
                )
            return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        assert isinstance(rollout_buffer, FastRecurrentRolloutBuffer)
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        rollout_buffer.teacher = (
            None if self.kickstart is None else np.zeros((rollout_buffer.buffer_size, self.n_envs, 2), np.float32)
        )
        callback.on_rollout_start()

        buf = rollout_buffer
        # np.clip in torch (the same values; np.clip costs ~10x more on a small array)
        low = th.as_tensor(self.action_space.low, device=self.device)
        high = th.as_tensor(self.action_space.high, device=self.device)
        # Zero-copy torch views of the buffer's arrays (``reset`` allocated them just now).
        values_all, log_probs_all = th.from_numpy(buf.values), th.from_numpy(buf.log_probs)
        state_buffers = [
            th.from_numpy(getattr(buf, name))
            for name in ("hidden_states_pi", "cell_states_pi", "hidden_states_vf", "cell_states_vf")
        ]
        lstm_states = cast(RNNStates, self._last_lstm_states)
        n_steps = 0
        assert self._last_episode_starts is not None
        dones: np.ndarray = self._last_episode_starts
        new_obs: np.ndarray = self._last_obs  # type: ignore[assignment]
        while n_steps < n_rollout_steps:
            with th.no_grad():
                obs_tensor = th.as_tensor(self._last_obs, device=self.device)
                episode_starts = th.as_tensor(self._last_episode_starts, dtype=th.float32, device=self.device)
                actions_t, values, log_probs, lstm_states = lean.step(obs_tensor, lstm_states, episode_starts)
            actions = actions_t.cpu().numpy()
            clipped_actions = th.clamp(actions_t, low, high).cpu().numpy()
            if self.kickstart is not None:  # the teachers act on the rows' tasks before the step's autoreset
                assert buf.teacher is not None
                teacher_actions, weights = self.kickstart.teachers.actions(self._last_obs)  # type: ignore[arg-type]
                buf.teacher[n_steps, :, 0] = teacher_actions[:, 0]
                buf.teacher[n_steps, :, 1] = weights
            new_obs, rewards, dones, infos = env.step(clipped_actions)  # type: ignore[assignment]
            self.num_timesteps += env.num_envs

            callback.update_locals(locals())
            if not callback.on_step():
                return False  # as stock: the interrupted step is not recorded (_last_obs / _last_lstm_states before it)
            self._update_info_buffer(infos, dones)

            # Timeouts bootstrap with the critic's value of the terminal observation, one row at a
            # time as stock does (a batched call would round differently; it runs once per episode).
            if dones.any():
                for idx in np.flatnonzero(dones):
                    info = infos[idx]
                    if info.get("terminal_observation") is not None and info.get("TimeLimit.truncated", False):
                        terminal_obs = self.policy.obs_to_tensor(info["terminal_observation"])[0]
                        assert isinstance(terminal_obs, th.Tensor)
                        terminal_state = (
                            lstm_states.vf[0][:, idx : idx + 1, :].contiguous(),
                            lstm_states.vf[1][:, idx : idx + 1, :].contiguous(),
                        )
                        with th.no_grad():
                            terminal_value = lean.values(terminal_obs, terminal_state, th.zeros(1, device=self.device))[
                                0
                            ]
                        rewards[idx] += self.gamma * terminal_value

            # rollout_buffer.add(...), written in place; the LSTM states stored are those before the step.
            buf.observations[n_steps] = self._last_obs
            buf.actions[n_steps] = actions.reshape(buf.actions.shape[1:])
            buf.rewards[n_steps] = rewards
            buf.episode_starts[n_steps] = self._last_episode_starts
            values_all[n_steps].copy_(values.flatten())
            log_probs_all[n_steps].copy_(log_probs)
            previous = cast(RNNStates, self._last_lstm_states)
            for store, state in zip(state_buffers, (*previous.pi, *previous.vf), strict=True):
                store[n_steps].copy_(state)
            n_steps += 1

            self._last_obs = new_obs
            self._last_episode_starts = dones
            self._last_lstm_states = lstm_states  # type: ignore[assignment]
        buf.pos, buf.full = n_steps, n_steps == buf.buffer_size

        with th.no_grad():
            # Value of the last observation, for the bootstrap
            values = lean.values(
                th.as_tensor(new_obs, device=self.device),
                lstm_states.vf,
                th.as_tensor(dones, dtype=th.float32, device=self.device),
            )
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
        callback.on_rollout_end()
        return True

    def train(self) -> None:
        """Stock ``train`` (same minibatches, loss, logs and early stop), with a foreach gradient clip.

        The only change is ``clip_grad_norm_(..., foreach=True)``: the gradient norm in one
        foreach call instead of a Python loop over the parameters (the same per-parameter norms,
        combined the same way: the same bits in our runs).
        """
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]
        policy = cast(RecurrentActorCriticPolicy, self.policy)
        parameters = [p for p in policy.parameters() if p.requires_grad]

        entropy_losses, pg_losses, value_losses, clip_fractions = [], [], [], []
        kickstart_weight = 0.0 if self.kickstart is None else self.kickstart.weight(self.num_timesteps)
        distill_losses: list[float] = []
        continue_training = True
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            for rollout_data in cast(Iterator[RecurrentRolloutBufferSamples], self.rollout_buffer.get(self.batch_size)):
                actions = rollout_data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = rollout_data.actions.long().flatten()
                mask = rollout_data.mask > 1e-8
                if kickstart_weight > 0.0:
                    values, log_prob, entropy, mean = evaluate_actions_and_mean(
                        policy,
                        rollout_data.observations,
                        actions,
                        rollout_data.lstm_states,
                        rollout_data.episode_starts,
                    )
                else:
                    values, log_prob, entropy = policy.evaluate_actions(
                        rollout_data.observations, actions, rollout_data.lstm_states, rollout_data.episode_starts
                    )
                values = values.flatten()
                advantages = rollout_data.advantages
                if self.normalize_advantage:
                    advantages = (advantages - advantages[mask].mean()) / (advantages[mask].std() + 1e-8)
                ratio = th.exp(log_prob - rollout_data.old_log_prob)
                policy_loss_1 = advantages * ratio
                policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                policy_loss = -th.mean(th.min(policy_loss_1, policy_loss_2)[mask])
                pg_losses.append(policy_loss.item())
                clip_fractions.append(th.mean((th.abs(ratio - 1) > clip_range).float()[mask]).item())
                if self.clip_range_vf is None:
                    values_pred = values
                else:
                    values_pred = rollout_data.old_values + th.clamp(
                        values - rollout_data.old_values, -clip_range_vf, clip_range_vf
                    )
                value_loss = th.mean(((rollout_data.returns - values_pred) ** 2)[mask])
                value_losses.append(value_loss.item())
                # Entropy loss; approximated from the log-probs when there is no analytical form
                entropy_loss = -th.mean(-log_prob[mask]) if entropy is None else -th.mean(entropy[mask])
                entropy_losses.append(entropy_loss.item())
                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                if kickstart_weight > 0.0:
                    distill = distillation_loss(mean, cast(KickstartSamples, rollout_data).teacher, mask)
                    distill_losses.append(distill.item())
                    loss = loss + kickstart_weight * distill

                with th.no_grad():
                    log_ratio = log_prob - rollout_data.old_log_prob
                    approx_kl_div = th.mean(((th.exp(log_ratio) - 1) - log_ratio)[mask]).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)
                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm, foreach=True)
                self.policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        if self.kickstart is not None:
            self.logger.record("train/kickstart_weight", kickstart_weight)
            if distill_losses:
                self.logger.record("train/kickstart_loss", np.mean(distill_losses))
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if self.clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def _excluded_save_params(self) -> list[str]:
        """Do not pickle ``torch_threads`` (a property of the machine, not of the agent) nor ``kickstart``
        (its teachers hold the env's core; :func:`agents.rl2.training.train` attaches them again on resume)."""
        return [*super()._excluded_save_params(), "torch_threads", "kickstart"]

    @classmethod
    def load(
        cls: type[SelfFastRecurrentPPO],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        torch_threads: int | None = None,
        **kwargs: Any,
    ) -> SelfFastRecurrentPPO:
        """Stock ``load``, plus the optional ``torch_threads`` setting (applied first)."""
        _apply_torch_threads(torch_threads)
        model = super().load(
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )
        model.torch_threads = torch_threads
        return model


def _apply_torch_threads(torch_threads: int | None) -> None:
    """Set torch's intra-op thread count if requested (``None``: leave it alone)."""
    if torch_threads is None:
        return
    if torch_threads < 1:
        raise ValueError(f"torch_threads must be >= 1, got {torch_threads}")
    th.set_num_threads(torch_threads)
