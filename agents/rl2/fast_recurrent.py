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

Everything else (losses, rollouts, save format) is stock sb3-contrib;
:class:`FastRecurrentPPO` only swaps the policy and buffer classes and
optionally sets torch's intra-op thread count.
"""

from __future__ import annotations

import io
import pathlib
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
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
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

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


class FastRecurrentRolloutBuffer(RecurrentRolloutBuffer):
    """``RecurrentRolloutBuffer`` with vectorised minibatch padding (identical samples).

    Only ``_get_samples`` changes; storage, ``get`` (and so the random split
    point it draws), GAE and the sample layout are stock.
    """

    def _get_samples(  # type: ignore[override]
        self,
        batch_inds: np.ndarray,
        env_change: np.ndarray,
        env: VecNormalize | None = None,
    ) -> RecurrentRolloutBufferSamples:
        seq, fields = _fast_common_fields(self, batch_inds, env_change)
        padded_batch_size = seq.n_seq * seq.max_length
        observations = seq.pad(self.observations[batch_inds]).reshape((padded_batch_size, *self.obs_shape))
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


class FastRecurrentPPO(RecurrentPPO):
    """``RecurrentPPO`` using the fast policies and rollout buffers; otherwise the stock algorithm.

    ``FastRecurrentPPO("MlpLstmPolicy", env, ...)`` accepts every argument of
    ``RecurrentPPO`` plus ``torch_threads``.  With the same seed it performs the
    same rollouts and updates as stock ``RecurrentPPO`` (up to float rounding
    order inside the LSTM kernels).

    :param torch_threads: if given, ``torch.set_num_threads(torch_threads)`` is
        called before the model is built.  This is process-global (torch has no
        per-model setting), which is why the default leaves it unchanged.  For
        the small LSTMs used in RL, 1 thread is usually fastest on CPU: the
        per-op work is too small to amortise intra-op parallelism.  The value
        is not saved with the model (it describes the machine, not the agent);
        pass it again to :meth:`load`.
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

    def _excluded_save_params(self) -> list[str]:
        """Do not pickle ``torch_threads``: it is a property of the machine, not of the agent."""
        return [*super()._excluded_save_params(), "torch_threads"]

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
