"""Tests for ``agents.rl2.fast_recurrent``: exact equivalence with stock RecurrentPPO, save/load, learning.

Why these tests: the fast path is only worth having if it computes what the
stock policy computes.  (a) checks one forward/backward on identical weights,
including the fallback for a mid-sequence episode start and that each branch is
really taken; (b) checks whole training runs against stock RecurrentPPO, and
that the tolerance used is tight enough to catch a policy that ignores episode
starts; (c) checks the save/load/continue cycle; (d) checks that the agent can
learn a task that needs memory, so a broken recurrence would fail.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from agents.rl2 import fast_recurrent
from agents.rl2.fast_recurrent import (
    FastMlpLstmPolicy,
    FastRecurrentActorCriticPolicy,
    FastRecurrentDictRolloutBuffer,
    FastRecurrentPPO,
    FastRecurrentRolloutBuffer,
)

ATOL = 1e-6


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Single-threaded torch: faster for these tiny nets and deterministic reduction order."""
    previous = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(previous)


class CueEnv(gym.Env[np.ndarray, int]):
    """Recall-the-cue task: needs memory of the first observation.

    Step 0 shows a cue of +1 or -1 in ``obs[0]``; later steps show 0 there.
    ``obs[1]`` is the normalised time step.  The episode lasts ``length`` steps
    and only the last action is rewarded: +1 if it matches the cue (action 1
    for +1, action 0 for -1), else 0.  A memoryless policy scores 0.5.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, length: int = 4) -> None:
        self.length = length
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._t = 0
        self._cue = 1.0

    def _obs(self) -> np.ndarray:
        return np.array([self._cue if self._t == 0 else 0.0, self._t / self.length], dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        self._cue = float(self.np_random.choice([-1.0, 1.0]))
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        last = self._t == self.length - 1
        reward = float(last and (int(action) == 1) == (self._cue > 0))
        self._t += 1
        return self._obs(), reward, last, False, {}


class ContinuousCueEnv(CueEnv):
    """``CueEnv`` with a Box action in [-1, 1] (the sign is the answer), cut by a time limit.

    The episode ends as ``truncated`` (not ``terminated``), so SB3 bootstraps the last reward
    with the critic's value of the terminal observation: the timeout path of the rollout.
    Actions are clipped into the space by the learner before they reach the env.
    """

    def __init__(self, length: int = 4) -> None:
        super().__init__(length)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)  # type: ignore[assignment]

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:  # type: ignore[override]
        a = float(np.asarray(action).reshape(-1)[0])
        assert -1.0 <= a <= 1.0, "actions must be clipped into the space"
        last = self._t == self.length - 1
        reward = float(a * self._cue) if last else 0.01 * a
        self._t += 1
        return self._obs(), reward, False, last, {}


def make_vec_env(n_envs: int, length: int, continuous: bool = False) -> DummyVecEnv:
    cls = ContinuousCueEnv if continuous else CueEnv
    return DummyVecEnv([lambda: cls(length) for _ in range(n_envs)])


# ---------------------------------------------------------------------------
# (a) one forward/backward on identical weights
# ---------------------------------------------------------------------------

OBS_DIM, HIDDEN, N_SEQ, SEQ_LEN = 5, 16, 6, 9


def _policy_pair(**policy_kwargs: Any) -> tuple[RecurrentActorCriticPolicy, FastRecurrentActorCriticPolicy]:
    obs_space = gym.spaces.Box(-1.0, 1.0, shape=(OBS_DIM,), dtype=np.float32)
    action_space = gym.spaces.Discrete(3)
    kwargs = {"lstm_hidden_size": HIDDEN, **policy_kwargs}
    th.manual_seed(0)
    stock = RecurrentActorCriticPolicy(obs_space, action_space, lambda _: 3e-4, **kwargs)
    th.manual_seed(1)  # different init, then overwritten: proves the copy is what makes them equal
    fast = FastRecurrentActorCriticPolicy(obs_space, action_space, lambda _: 3e-4, **kwargs)
    fast.load_state_dict(stock.state_dict())
    return stock, fast


def _batch(mid_start: bool) -> dict[str, Any]:
    """A padded training-like batch: starts at sequence heads, zero padding at tails.

    Initial states are random (as after a previous episode), so a reset that is
    skipped or misplaced changes the outputs.
    """
    g = th.Generator().manual_seed(123)
    obs = th.randn(N_SEQ, SEQ_LEN, OBS_DIM, generator=g)
    starts = th.zeros(N_SEQ, SEQ_LEN)
    starts[[0, 2, 3, 5], 0] = 1.0  # heads of some sequences start an episode
    obs[1, 6:] = 0.0  # padded tails, as produced by the buffer's pad()
    obs[4, 4:] = 0.0
    if mid_start:
        starts[1, 4] = 1.0  # cannot happen with the stock buffer; must use the fallback
    actions = th.randint(0, 3, (N_SEQ * SEQ_LEN,), generator=g)

    def state() -> tuple[th.Tensor, th.Tensor]:
        return (th.randn(1, N_SEQ, HIDDEN, generator=g), th.randn(1, N_SEQ, HIDDEN, generator=g))

    return {
        "obs": obs.reshape(N_SEQ * SEQ_LEN, OBS_DIM),
        "starts": starts.reshape(-1),
        "actions": actions,
        "states": RNNStates(state(), state()),
    }


def _run(policy: RecurrentActorCriticPolicy, batch: dict[str, Any]) -> dict[str, Any]:
    """evaluate_actions + predict_values + forward states, then one backward pass."""
    policy.zero_grad()
    states = RNNStates(
        tuple(s.clone().requires_grad_(True) for s in batch["states"].pi),
        tuple(s.clone().requires_grad_(True) for s in batch["states"].vf),
    )
    values, log_prob, entropy = policy.evaluate_actions(batch["obs"], batch["actions"], states, batch["starts"])
    pred_values = policy.predict_values(batch["obs"], states.vf, batch["starts"])
    _, fwd_values, _, fwd_states = policy.forward(batch["obs"], states, batch["starts"], deterministic=True)
    loss = (values**2).mean() - log_prob.mean() - 0.01 * entropy.mean() + pred_values.mean()
    loss.backward()
    return {
        "values": values,
        "log_prob": log_prob,
        "entropy": entropy,
        "pred_values": pred_values,
        "fwd_values": fwd_values,
        "states": [*fwd_states.pi, *fwd_states.vf],
        "param_grads": {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None},
        "state_grads": [None if s.grad is None else s.grad.clone() for s in (*states.pi, *states.vf)],
    }


def _assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in ("values", "log_prob", "entropy", "pred_values", "fwd_values"):
        assert th.allclose(a[key], b[key], atol=ATOL), key
    for x, y in zip(a["states"], b["states"], strict=True):
        assert th.allclose(x, y, atol=ATOL)
    assert a["param_grads"].keys() == b["param_grads"].keys()
    assert len(a["param_grads"]) > 0
    for name in a["param_grads"]:
        assert th.allclose(a["param_grads"][name], b["param_grads"][name], atol=ATOL), name
    assert any(g is not None for g in a["state_grads"])
    for x, y in zip(a["state_grads"], b["state_grads"], strict=True):
        assert (x is None) == (y is None)
        if x is not None:
            assert th.allclose(x, y, atol=ATOL)


class _CountStockCalls:
    """Counts calls of the stock loop made from the fast module's fallback."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        stock = RecurrentActorCriticPolicy._process_sequence

        class Counting(RecurrentActorCriticPolicy):
            @staticmethod
            def _process_sequence(*args: Any, **kwargs: Any) -> Any:
                self.calls += 1
                return stock(*args, **kwargs)

        monkeypatch.setattr(fast_recurrent, "RecurrentActorCriticPolicy", Counting)


@pytest.mark.parametrize(
    "policy_kwargs",
    [{}, {"enable_critic_lstm": False}, {"shared_lstm": True, "enable_critic_lstm": False}, {"n_lstm_layers": 2}],
    ids=["separate-lstms", "no-critic-lstm", "shared-lstm", "two-layers"],
)
@pytest.mark.parametrize("mid_start", [False, True], ids=["starts-at-heads", "start-mid-sequence"])
def test_policy_matches_stock(policy_kwargs: dict[str, Any], mid_start: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    stock, fast = _policy_pair(**policy_kwargs)
    batch = _batch(mid_start)
    if policy_kwargs.get("n_lstm_layers") == 2:
        batch["states"] = RNNStates(*[tuple(th.cat([s, 0.5 * s]) for s in pair) for pair in batch["states"]])
    expected = _run(stock, batch)
    counter = _CountStockCalls(monkeypatch)
    got = _run(fast, batch)
    _assert_same(expected, got)
    # The branch we meant to test was really taken.
    if mid_start:
        assert counter.calls > 0
    else:
        assert counter.calls == 0


def test_batch_is_sensitive_to_episode_starts() -> None:
    """Guard against a vacuous (a): ignoring the starts must change the outputs."""
    stock, _ = _policy_pair()
    batch = _batch(mid_start=False)
    ignored = {**batch, "starts": th.zeros_like(batch["starts"])}
    a, b = _run(stock, batch), _run(stock, ignored)
    assert not th.allclose(a["values"], b["values"], atol=1e-3)


def test_collection_step_matches_stock() -> None:
    """Sequence length 1 (data collection / predict), some envs starting an episode."""
    stock, fast = _policy_pair()
    g = th.Generator().manual_seed(7)
    obs = th.randn(N_SEQ, OBS_DIM, generator=g)
    starts = th.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    states = RNNStates(
        *[(th.randn(1, N_SEQ, HIDDEN, generator=g), th.randn(1, N_SEQ, HIDDEN, generator=g)) for _ in range(2)]
    )
    with th.no_grad():
        sa, sv, sl, ss = stock.forward(obs, states, starts, deterministic=True)
        fa, fv, fl, fs = fast.forward(obs, states, starts, deterministic=True)
    assert th.equal(sa, fa)
    assert th.allclose(sv, fv, atol=ATOL) and th.allclose(sl, fl, atol=ATOL)
    for x, y in zip([*ss.pi, *ss.vf], [*fs.pi, *fs.vf], strict=True):
        assert th.allclose(x, y, atol=ATOL)


# ---------------------------------------------------------------------------
# (b) whole training runs
# ---------------------------------------------------------------------------

# Parameters after training are compared with this tolerance, not bit-equality.
# Fast and stock feed the same numbers to different LSTM kernel calls (one call
# over T steps vs T calls of one step; on CPU the input projection of a
# multi-step call is one batched matmul and oneDNN may block it differently),
# so torch does not guarantee identical rounding, and Adam can amplify
# last-bit differences a little.  Measured here: max |diff| ~6e-8 after two
# updates.  A policy that ignores episode starts differs by ~1e-2 (checked
# below), three orders of magnitude above the tolerance.
TRAIN_ATOL = 1e-5

TRAIN_KWARGS: dict[str, Any] = {
    "n_steps": 32,
    "batch_size": 40,  # 96 steps per rollout -> minibatches of 40, 40, 16, most containing starts
    "n_epochs": 2,
    "learning_rate": 1e-3,
    "policy_kwargs": {"lstm_hidden_size": 16, "net_arch": [16]},
    "seed": 3,
    "device": "cpu",
}


class _IgnoresStartsPolicy(RecurrentActorCriticPolicy):
    """A deliberately wrong fast path: one LSTM call that never resets the state."""

    @staticmethod
    def _process_sequence(
        features: th.Tensor, lstm_states: tuple[th.Tensor, th.Tensor], episode_starts: th.Tensor, lstm: nn.LSTM
    ) -> tuple[th.Tensor, tuple[th.Tensor, th.Tensor]]:
        return fast_recurrent.process_sequence_fast(features, lstm_states, th.zeros_like(episode_starts), lstm)


def _train_model(algo_cls: type[RecurrentPPO], policy: Any = "MlpLstmPolicy", continuous: bool = False) -> RecurrentPPO:
    # 3 envs, episodes of 5 steps: starts at many positions inside each minibatch
    model = algo_cls(policy, make_vec_env(3, length=5, continuous=continuous), **TRAIN_KWARGS)
    model.learn(total_timesteps=2 * 3 * TRAIN_KWARGS["n_steps"])  # two rollouts, two updates
    assert model.num_timesteps == 2 * 3 * TRAIN_KWARGS["n_steps"]
    return model


def _params(model: RecurrentPPO) -> dict[str, th.Tensor]:
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


def _train(
    algo_cls: type[RecurrentPPO], policy: Any = "MlpLstmPolicy", continuous: bool = False
) -> dict[str, th.Tensor]:
    return _params(_train_model(algo_cls, policy, continuous))


def _max_abs_diff(a: dict[str, th.Tensor], b: dict[str, th.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


class _CountLeanSteps:
    """Counts the lean rollout steps (``RolloutStep.step``) taken by ``FastRecurrentPPO.collect_rollouts``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        step = fast_recurrent.RolloutStep.step

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return step(*args, **kwargs)

        monkeypatch.setattr(fast_recurrent.RolloutStep, "step", counting)


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete-stock-rollout", "box-lean-rollout"])
def test_training_matches_stock(continuous: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    stock_model = _train_model(RecurrentPPO, continuous=continuous)
    stock = _params(stock_model)
    counter = _CountStockCalls(monkeypatch)
    lean = _CountLeanSteps(monkeypatch)
    fast_model = _train_model(FastRecurrentPPO, continuous=continuous)
    fast = _params(fast_model)
    # The stock RecurrentRolloutBuffer starts a new sequence at every episode
    # start, so the fallback loop is never needed during training.
    assert counter.calls == 0
    # Box actions take the lean rollout step (every step of both rollouts); Discrete ones the stock loop.
    assert lean.calls == (2 * TRAIN_KWARGS["n_steps"] if continuous else 0)
    # The first rollout (the same initial weights) is bit-identical to stock's, lean step or not.
    first = []
    for cls in (RecurrentPPO, FastRecurrentPPO):  # built and run one after the other: seeding is global
        model = cls("MlpLstmPolicy", make_vec_env(3, length=5, continuous=continuous), **TRAIN_KWARGS)
        model.learn(total_timesteps=3 * TRAIN_KWARGS["n_steps"])
        first.append(model)
    for name in ("observations", "actions", "rewards", "values", "log_probs", "hidden_states_pi", "cell_states_vf"):
        assert np.array_equal(getattr(first[0].rollout_buffer, name), getattr(first[1].rollout_buffer, name)), name
    # The last rollout's buffer: same data (rewards include the timeout bootstrap of the Box env).
    for name in ("observations", "actions", "rewards", "episode_starts", "values", "log_probs", "advantages"):
        a, b = getattr(stock_model.rollout_buffer, name), getattr(fast_model.rollout_buffer, name)
        assert a.shape == b.shape and np.allclose(a, b, atol=TRAIN_ATOL), name
    for name in ("hidden_states_pi", "cell_states_pi", "hidden_states_vf", "cell_states_vf"):
        a, b = getattr(stock_model.rollout_buffer, name), getattr(fast_model.rollout_buffer, name)
        assert a.shape == b.shape and np.allclose(a, b, atol=TRAIN_ATOL), name
    assert [ep["r"] for ep in stock_model.ep_info_buffer] == pytest.approx(
        [ep["r"] for ep in fast_model.ep_info_buffer], abs=1e-5
    )
    for a, b in zip(
        [*stock_model._last_lstm_states.pi, *stock_model._last_lstm_states.vf],
        [*fast_model._last_lstm_states.pi, *fast_model._last_lstm_states.vf],
        strict=True,
    ):
        assert th.allclose(a, b, atol=TRAIN_ATOL)
    wrong = _train(RecurrentPPO, _IgnoresStartsPolicy, continuous=continuous)
    initial = _params(FastRecurrentPPO("MlpLstmPolicy", make_vec_env(3, 5, continuous=continuous), **TRAIN_KWARGS))

    assert _max_abs_diff(stock, initial) > 1e-3, "training must move the parameters"
    assert _max_abs_diff(stock, fast) <= TRAIN_ATOL
    # The tolerance is far below what a wrong recurrence produces.
    assert _max_abs_diff(stock, wrong) > 100 * TRAIN_ATOL


def test_same_seed_same_training() -> None:
    """Two fast runs with one seed are bit-identical (lean rollout, fused Adam and all)."""
    a, b = _train_model(FastRecurrentPPO, continuous=True), _train_model(FastRecurrentPPO, continuous=True)
    for k, v in _params(a).items():
        assert th.equal(v, _params(b)[k]), k
    assert np.array_equal(a.rollout_buffer.actions, b.rollout_buffer.actions)


def test_callback_stop_matches_stock() -> None:
    """A callback that stops mid-rollout leaves the fast model where it leaves stock (steps, obs, LSTM state)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class StopAfter(BaseCallback):
        def _on_step(self) -> bool:
            return self.n_calls < 7

    models = []
    for cls in (RecurrentPPO, FastRecurrentPPO):
        model = cls("MlpLstmPolicy", make_vec_env(3, length=5, continuous=True), **TRAIN_KWARGS)
        model.learn(total_timesteps=2 * 3 * TRAIN_KWARGS["n_steps"], callback=StopAfter())
        models.append(model)
    stock, fast = models
    assert stock.num_timesteps == fast.num_timesteps == 7 * 3
    assert np.allclose(stock._last_obs, fast._last_obs, atol=TRAIN_ATOL)
    for a, b in zip(
        [*stock._last_lstm_states.pi, *stock._last_lstm_states.vf],
        [*fast._last_lstm_states.pi, *fast._last_lstm_states.vf],
        strict=True,
    ):
        assert th.allclose(a, b, atol=TRAIN_ATOL)


@pytest.mark.parametrize("policy_kwargs", [{}, {"n_lstm_layers": 2}, {"net_arch": {"pi": [8, 8], "vf": [16]}}])
def test_rollout_step_matches_stock_forward(policy_kwargs: dict[str, Any]) -> None:
    """The lean collection step draws the same noise and computes stock ``forward``'s outputs, bit for bit."""
    obs_space = gym.spaces.Box(-1.0, 1.0, shape=(OBS_DIM,), dtype=np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    policy = FastRecurrentActorCriticPolicy(
        obs_space, action_space, lambda _: 3e-4, lstm_hidden_size=HIDDEN, log_std_init=-0.5, **policy_kwargs
    )
    step = fast_recurrent.RolloutStep.build(policy)
    assert step is not None
    layers = policy.lstm_actor.num_layers
    g = th.Generator().manual_seed(5)
    obs = th.randn(N_SEQ, OBS_DIM, generator=g)
    starts = th.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    states = RNNStates(
        *[
            (th.randn(layers, N_SEQ, HIDDEN, generator=g), th.randn(layers, N_SEQ, HIDDEN, generator=g))
            for _ in range(2)
        ]
    )
    with th.no_grad():
        th.manual_seed(11)
        expected = policy.forward(obs, states, starts)
        rng_after_stock = th.get_rng_state()
        th.manual_seed(11)
        got = step.step(obs, states, starts)
        assert th.equal(th.get_rng_state(), rng_after_stock), "the same draws from the torch RNG"
        values = step.values(obs, states.vf, starts)
        stock_values = policy.predict_values(obs, states.vf, starts)
    for x, y in zip(expected[:3], got[:3], strict=True):
        assert x.shape == y.shape and th.equal(x, y)
    for x, y in zip([*expected[3].pi, *expected[3].vf], [*got[3].pi, *got[3].vf], strict=True):
        assert th.equal(x, y)
    assert th.equal(values, stock_values)


def test_rollout_step_declines_uncovered_layouts() -> None:
    """Layouts the lean step does not cover fall back to the stock loop (``build`` returns None)."""
    obs_space = gym.spaces.Box(-1.0, 1.0, shape=(OBS_DIM,), dtype=np.float32)
    box = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
    for action_space, kwargs in [
        (gym.spaces.Discrete(3), {}),
        (box, {"shared_lstm": True, "enable_critic_lstm": False}),
        (box, {"enable_critic_lstm": False}),
        (box, {"use_sde": True}),
    ]:
        policy = FastRecurrentActorCriticPolicy(obs_space, action_space, lambda _: 3e-4, lstm_hidden_size=4, **kwargs)
        assert fast_recurrent.RolloutStep.build(policy) is None, kwargs


# ---------------------------------------------------------------------------
# (b2) the vectorised rollout buffer yields exactly the stock minibatches
# ---------------------------------------------------------------------------

BUF_STEPS, BUF_ENVS, BUF_LAYERS, BUF_HIDDEN = 13, 4, 2, 3


def _fill(buffer: RecurrentRolloutBuffer | RecurrentDictRolloutBuffer, seed: int, start_prob: float) -> None:
    """Identical random data for every buffer built with the same seed.

    Starts at random places (``start_prob``), so some runs of consecutive
    starts give sequences of length 1, and some env rollouts have no start.
    """
    rng = np.random.default_rng(seed)
    n_layers, hidden = buffer.hidden_state_shape[1], buffer.hidden_state_shape[3]

    def obs() -> Any:
        if isinstance(buffer.observation_space, gym.spaces.Dict):
            return {
                "vec": rng.normal(size=(BUF_ENVS, 3)).astype(np.float32),
                "img": rng.integers(0, 256, size=(BUF_ENVS, 2, 2), dtype=np.uint8),
            }
        return rng.normal(size=(BUF_ENVS, 3)).astype(np.float32)

    def states() -> tuple[th.Tensor, th.Tensor]:
        return tuple(th.as_tensor(rng.normal(size=(n_layers, BUF_ENVS, hidden)).astype(np.float32)) for _ in range(2))  # type: ignore[return-value]

    for _ in range(BUF_STEPS):
        buffer.add(
            obs(),
            rng.normal(size=(BUF_ENVS, 2)).astype(np.float32),
            rng.normal(size=BUF_ENVS).astype(np.float32),
            rng.random(BUF_ENVS) < start_prob,
            th.as_tensor(rng.normal(size=(BUF_ENVS, 1)).astype(np.float32)),
            th.as_tensor(rng.normal(size=BUF_ENVS).astype(np.float32)),
            lstm_states=RNNStates(states(), states()),
        )
    buffer.compute_returns_and_advantage(
        last_values=th.as_tensor(rng.normal(size=(BUF_ENVS, 1)).astype(np.float32)),
        dones=rng.random(BUF_ENVS) < start_prob,
    )


def _make_buffer(cls: type, dict_obs: bool, n_layers: int) -> Any:
    if dict_obs:
        obs_space: gym.Space[Any] = gym.spaces.Dict(
            {
                "vec": gym.spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32),
                "img": gym.spaces.Box(0, 255, shape=(2, 2), dtype=np.uint8),
            }
        )
    else:
        obs_space = gym.spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    return cls(
        BUF_STEPS,
        obs_space,
        action_space,
        (BUF_STEPS, n_layers, BUF_ENVS, BUF_HIDDEN),
        "cpu",
        gamma=0.9,
        gae_lambda=0.8,
        n_envs=BUF_ENVS,
    )


def _assert_identical(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_identical(x, y, f"{where}[{i}]")
    else:
        assert isinstance(b, th.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape and a.device == b.device, (
            where,
            a.dtype,
            b.dtype,
            a.shape,
            b.shape,
        )
        assert b.is_contiguous() == a.is_contiguous(), where
        assert th.equal(a, b), where


@pytest.mark.parametrize("dict_obs", [False, True], ids=["box", "dict"])
@pytest.mark.parametrize("start_prob", [0.3, 0.8, 0.0])
def test_fast_buffer_matches_stock(dict_obs: bool, start_prob: float) -> None:
    stock_cls, fast_cls = (
        (RecurrentDictRolloutBuffer, FastRecurrentDictRolloutBuffer)
        if dict_obs
        else (RecurrentRolloutBuffer, FastRecurrentRolloutBuffer)
    )
    stock, fast = _make_buffer(stock_cls, dict_obs, BUF_LAYERS), _make_buffer(fast_cls, dict_obs, BUF_LAYERS)
    _fill(stock, seed=7, start_prob=start_prob)
    _fill(fast, seed=7, start_prob=start_prob)
    total = BUF_STEPS * BUF_ENVS  # 52
    saw_len1 = saw_wrap = False
    # 16 does not divide 52 (short last minibatch); 1 gives only length-1 sequences.
    for batch_size in [16, 7, 52, None, 1]:
        for draw in range(6):  # several split points: minibatches that wrap around the end
            np.random.seed(1000 * draw + (batch_size or 0))
            stock_samples = list(stock.get(batch_size))
            state_after_stock = np.random.get_state()[1].copy()
            np.random.seed(1000 * draw + (batch_size or 0))
            fast_samples = list(fast.get(batch_size))
            assert np.array_equal(np.random.get_state()[1], state_after_stock), (
                "the fast buffer must draw the same random numbers"
            )
            assert len(stock_samples) == len(fast_samples) == -(-total // (batch_size or total))
            for i, (a, b) in enumerate(zip(stock_samples, fast_samples, strict=True)):
                assert type(a) is type(b)
                for field in a._fields:
                    _assert_identical(
                        getattr(a, field), getattr(b, field), f"bs={batch_size} draw={draw} sample={i} {field}"
                    )
                n_seq = a.lstm_states.pi[0].shape[1]
                lengths = a.mask.reshape(n_seq, -1).sum(dim=1)
                saw_len1 |= bool((lengths == 1).any()) and a.mask.numel() > n_seq
                assert np.array_equal(stock.seq_start_indices, fast.seq_start_indices)
            # A minibatch wraps around when the split point is not a multiple of the batch size.
            saw_wrap |= batch_size not in (None, total)
    assert saw_wrap
    if start_prob >= 0.8:
        assert saw_len1, "data must contain length-1 sequences padded next to longer ones"


def test_fast_buffer_single_layer_and_ppo_uses_it() -> None:
    stock, fast = _make_buffer(RecurrentRolloutBuffer, False, 1), _make_buffer(FastRecurrentRolloutBuffer, False, 1)
    _fill(stock, seed=3, start_prob=0.5)
    _fill(fast, seed=3, start_prob=0.5)
    np.random.seed(5)
    a_all = list(stock.get(10))
    np.random.seed(5)
    b_all = list(fast.get(10))
    for a, b in zip(a_all, b_all, strict=True):
        for field in a._fields:
            _assert_identical(getattr(a, field), getattr(b, field), field)

    model = FastRecurrentPPO(
        "MlpLstmPolicy",
        make_vec_env(2, 4),
        n_steps=8,
        batch_size=8,
        device="cpu",
        policy_kwargs={"lstm_hidden_size": 8, "n_lstm_layers": 2},
    )
    assert type(model.rollout_buffer) is FastRecurrentRolloutBuffer
    assert model.rollout_buffer.hidden_state_shape == (8, 2, 2, 8)
    assert (model.rollout_buffer.gamma, model.rollout_buffer.gae_lambda, model.rollout_buffer.n_envs) == (
        model.gamma,
        model.gae_lambda,
        2,
    )
    assert (
        type(RecurrentPPO("MlpLstmPolicy", make_vec_env(2, 4), n_steps=8, batch_size=8, device="cpu").rollout_buffer)
        is RecurrentRolloutBuffer
    )


# ---------------------------------------------------------------------------
# (c) construction, save / load / continue
# ---------------------------------------------------------------------------


def test_aliases_and_threads() -> None:
    model = FastRecurrentPPO(
        "MlpLstmPolicy", make_vec_env(2, 4), n_steps=8, batch_size=8, torch_threads=1, device="cpu"
    )
    assert type(model.policy) is FastRecurrentActorCriticPolicy
    assert FastMlpLstmPolicy is FastRecurrentActorCriticPolicy
    assert th.get_num_threads() == 1
    # A stock policy class passed explicitly is swapped for its fast twin.
    model = FastRecurrentPPO(RecurrentActorCriticPolicy, make_vec_env(2, 4), n_steps=8, batch_size=8, device="cpu")
    assert type(model.policy) is FastRecurrentActorCriticPolicy
    with pytest.raises(ValueError):
        FastRecurrentPPO("MlpLstmPolicy", make_vec_env(2, 4), torch_threads=0)


def test_save_load_continue(tmp_path: Path) -> None:
    env = make_vec_env(2, 4)
    model = FastRecurrentPPO(
        "MlpLstmPolicy",
        env,
        n_steps=16,
        batch_size=16,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs={"lstm_hidden_size": 8},
        torch_threads=1,
    )
    model.learn(32)
    path = tmp_path / "fast_rppo.zip"
    model.save(path)

    loaded = FastRecurrentPPO.load(path, env=make_vec_env(2, 4), device="cpu", torch_threads=1)
    assert type(loaded.policy) is FastRecurrentActorCriticPolicy
    assert loaded.torch_threads == 1
    before = {k: v.clone() for k, v in loaded.policy.state_dict().items()}
    for k, v in model.policy.state_dict().items():
        assert th.equal(v, before[k]), k

    # Same recurrent predictions, step by step with carried state.
    obs = np.array([[1.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    starts = np.ones(2, dtype=bool)
    s1 = s2 = None
    for _ in range(3):
        a1, s1 = model.predict(obs, state=s1, episode_start=starts, deterministic=True)
        a2, s2 = loaded.predict(obs, state=s2, episode_start=starts, deterministic=True)
        assert np.array_equal(a1, a2)
        assert all(np.allclose(x, y) for x, y in zip(s1, s2, strict=True))
        obs, starts = np.zeros_like(obs), np.zeros(2, dtype=bool)

    loaded.learn(32, reset_num_timesteps=False)
    assert loaded.num_timesteps == 64
    after = loaded.policy.state_dict()
    assert any(not th.equal(after[k], before[k]) for k in before), "continued training must update"


def test_fast_file_loads_with_stock(tmp_path: Path) -> None:
    """A FastRecurrentPPO file is a stock RecurrentPPO file: stock ``load`` rebuilds it and trains on."""
    model = FastRecurrentPPO(
        "MlpLstmPolicy",
        make_vec_env(2, 4, continuous=True),
        n_steps=16,
        batch_size=16,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs={"lstm_hidden_size": 8},
    )
    model.learn(32)
    model.save(tmp_path / "fast.zip")
    stock = RecurrentPPO.load(tmp_path / "fast.zip", env=make_vec_env(2, 4, continuous=True), device="cpu")
    # (the file names the fast policy class, a RecurrentActorCriticPolicy with the stock state_dict layout)
    assert type(stock) is RecurrentPPO and isinstance(stock.policy, RecurrentActorCriticPolicy)
    for k, v in model.policy.state_dict().items():
        assert th.equal(v, stock.policy.state_dict()[k]), k
    saved_state = model.policy.optimizer.state_dict()["state"]
    loaded_state = stock.policy.optimizer.state_dict()["state"]
    assert saved_state.keys() == loaded_state.keys()
    for i in saved_state:
        assert th.equal(saved_state[i]["exp_avg"], loaded_state[i]["exp_avg"])
    obs = np.array([[1.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    a1, s1 = model.predict(obs, episode_start=np.ones(2, dtype=bool), deterministic=True)
    a2, s2 = stock.predict(obs, episode_start=np.ones(2, dtype=bool), deterministic=True)
    assert np.allclose(a1, a2, atol=ATOL) and all(np.allclose(x, y, atol=ATOL) for x, y in zip(s1, s2, strict=True))
    before = {k: v.clone() for k, v in stock.policy.state_dict().items()}
    stock.learn(32, reset_num_timesteps=False)
    assert stock.num_timesteps == 64
    assert any(not th.equal(stock.policy.state_dict()[k], before[k]) for k in before), "stock continues training"


def test_load_stock_checkpoint_gets_fast_policy(tmp_path: Path) -> None:
    stock = RecurrentPPO(
        "MlpLstmPolicy",
        make_vec_env(2, 4),
        n_steps=8,
        batch_size=8,
        device="cpu",
        policy_kwargs={"lstm_hidden_size": 8},
    )
    stock.save(tmp_path / "stock.zip")
    loaded = FastRecurrentPPO.load(tmp_path / "stock.zip", env=make_vec_env(2, 4), device="cpu")
    assert type(loaded.policy) is FastRecurrentActorCriticPolicy
    for k, v in stock.policy.state_dict().items():
        assert th.equal(v, loaded.policy.state_dict()[k])


# ---------------------------------------------------------------------------
# (d) learning a task that needs memory
# ---------------------------------------------------------------------------


def _evaluate(model: RecurrentPPO, length: int, n_episodes: int = 200) -> float:
    """Mean episode reward of the deterministic policy, n_episodes run in parallel."""
    envs = [CueEnv(length) for _ in range(n_episodes)]
    obs = np.stack([e.reset(seed=10_000 + i)[0] for i, e in enumerate(envs)])
    state = None
    starts = np.ones(n_episodes, dtype=bool)
    total = np.zeros(n_episodes)
    for _ in range(length):
        actions, state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        steps = [e.step(int(a)) for e, a in zip(envs, actions, strict=True)]
        obs = np.stack([s[0] for s in steps])
        total += [s[1] for s in steps]
        starts = np.zeros(n_episodes, dtype=bool)
    return float(total.mean())


def test_learns_to_recall_cue() -> None:
    length = 8  # cue at step 0, reward for the action at step 7
    model = FastRecurrentPPO(
        "MlpLstmPolicy",
        make_vec_env(8, length),
        n_steps=32,
        batch_size=128,
        n_epochs=4,
        learning_rate=3e-3,
        gamma=0.99,
        policy_kwargs={"lstm_hidden_size": 32, "net_arch": [32]},
        seed=0,
        device="cpu",
    )
    start = time.perf_counter()
    model.learn(total_timesteps=6_000)
    elapsed = time.perf_counter() - start
    score = _evaluate(model, length)
    # A policy without memory scores 0.5 in expectation (std over 200 episodes ~0.035).
    assert score >= 0.9, f"mean reward {score:.2f} after {elapsed:.1f}s"
