"""The contract of every registered ``MetaOpt-*`` id, per task family x action mode x RL² trial mode.

In the spirit of Gymnasium's ``tests/envs/test_envs.py``: the registry drives the parametrization
(an id registered without an entry in ``CONTRACTS`` fails :func:`test_every_registered_id_has_a_contract`),
and each id lists its built-in task families and action modes from the package itself. Every case
(id, family, action mode, ``episodes_per_trial`` None or 2) keeps these promises:

- Gymnasium's and SB3's env checkers pass (warnings are failures);
- the env pickles, fresh and mid-episode, and the copy continues exactly as the original;
- two envs with one seed give identical rollouts (also across the unseeded resets that follow);
- observations stay inside the declared space at every step, after divergence (LR) and autoreset,
  in the final observations too, and rewards are finite;
- row ``i`` of ``gym.make_vec`` / ``make_sb3_vec_env`` seeded ``s`` is the single env seeded ``s + i``:
  bit-equal for every built-in family but the two convolutional module families, whose measured tolerance
  ``CONTRACTS[id].tolerance`` holds;
- ``gym.make``, ``gym.make_vec`` and the SB3 VecEnv report identical terminated / truncated flags;
- bad actions raise ``ValueError`` naming ``action(s)`` and what is expected, out-of-range ones are clipped.

Per id: the core owns the episode length (nothing registered, ``horizon=`` / ``budget=`` is obeyed by every
adapter), and bad constructor arguments and seeds raise ``ValueError`` naming the argument. The last
section holds the regression tests of the defects this suite was written to catch.

Kept fast: short episodes through kwargs, 3 rows, a handful of steps.
"""

from __future__ import annotations

import inspect
import math
import pickle
import re
import warnings
from dataclasses import dataclass, field, fields
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.registration import load_env_creator
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.vector import VectorEnv
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import VecEnv

import metaopt_envs
from metaopt_envs.ensemble.core import ACTION_MODES as ENSEMBLE_ACTION_MODES
from metaopt_envs.ensemble.families import STREAM_FAMILIES
from metaopt_envs.hpo.families import OBJECTIVE_FAMILIES
from metaopt_envs.lr.core import ACTION_MODES as LR_ACTION_MODES
from metaopt_envs.lr.families import REALISTIC_FAMILIES, TASK_FAMILIES

NUM_ENVS = 3
SEED = 123
TRIAL_MODES = (None, 2)
EXACT = {"rtol": 0.0, "atol": 0.0}


@dataclass(frozen=True)
class IdContract:
    """What the suite needs to know about one registered id."""

    families: tuple[str, ...]
    """Every built-in task family (the package's registry of the family kind: plus the mixture, and for LR the
    realistic suite)."""
    action_modes: tuple[str | None, ...]
    """``action_mode`` values; ``(None,)`` where the env has no such argument."""
    length_argument: str
    """The core argument that sets the episode length in decisions (``horizon`` / ``budget``)."""
    small: dict[str, Any]
    """Keyword arguments that make episodes short (``length`` decisions)."""
    length: int
    tolerance: dict[str, dict[str, float]] = field(default_factory=dict)
    """Batched rows vs single envs per family, as it holds today; a family not listed is bit-equal."""
    stress: dict[str, Any] = field(default_factory=dict)
    """Extra kwargs for the rollouts: make runs diverge where the family can (LR: learning rates up to 1e3)."""
    first_mode_only: tuple[str, ...] = ()
    """Families run in the first action mode only (the mapping of actions does not depend on the family; these
    families' steps cost the most), to keep the suite fast."""


CONTRACTS: dict[str, IdContract] = {
    "MetaOpt-LR-v0": IdContract(
        families=(*TASK_FAMILIES, "mixture", *REALISTIC_FAMILIES),  # the realistic suite runs on ModuleFamily
        action_modes=LR_ACTION_MODES,
        length_argument="horizon",
        small={"horizon": 4},
        length=4,
        stress={"lr_range": (1e-4, 1e3)},
        # Measured (vmap over grouped convolutions rounds differently at another batch size): largest absolute
        # deviation 1.7e-6 over the stressed rollouts; the other module families are bit-equal.
        tolerance={name: {"rtol": 1e-5, "atol": 1e-5} for name in ("digits_convnet", "mnist1d_conv")},
        first_mode_only=tuple(REALISTIC_FAMILIES),
    ),
    "MetaOpt-Ensemble-v0": IdContract(
        families=(*STREAM_FAMILIES, "mixture"),
        action_modes=ENSEMBLE_ACTION_MODES,
        length_argument="horizon",
        small={"horizon": 4, "warmup": 16},
        length=4,
    ),
    "MetaOpt-HPO-v0": IdContract(
        families=(*OBJECTIVE_FAMILIES, "mixture"),
        action_modes=(None,),
        length_argument="budget",
        small={"budget": 4},
        length=4,
    ),
    "MetaOpt-Acquisition-v0": IdContract(
        families=(*OBJECTIVE_FAMILIES, "mixture"),
        action_modes=(None,),
        length_argument="budget",
        small={"budget": 4, "num_candidates": 6, "num_local": 2, "fit_steps": 3},
        length=4,
    ),
}

REGISTERED = sorted(spec.id for spec in gym.registry.values() if spec.id.startswith("MetaOpt-"))


def _short(env_id: str) -> str:
    """``"MetaOpt-LR-v0"`` -> ``"LR"``, for test ids."""
    return env_id.split("-")[1]


@dataclass(frozen=True)
class Case:
    env_id: str
    family: str
    action_mode: str | None
    episodes_per_trial: int | None

    @property
    def contract(self) -> IdContract:
        return CONTRACTS[self.env_id]

    def kwargs(self, stress: bool = False) -> dict[str, Any]:
        """Env keyword arguments of this case (with the contract's stress kwargs if ``stress``)."""
        out: dict[str, Any] = {"task_family": self.family, **self.contract.small}
        if self.action_mode is not None:
            out["action_mode"] = self.action_mode
        if self.episodes_per_trial is not None:
            out["episodes_per_trial"] = self.episodes_per_trial
        return {**out, **(self.contract.stress if stress else {})}

    def make(self, stress: bool = False) -> gym.Env:
        """``gym.make`` of this case."""
        return gym.make(self.env_id, **self.kwargs(stress))

    def actions(self, steps: int, rows: int | None, seed: int) -> np.ndarray:
        """:func:`_actions` in this case's action space."""
        return _actions(self.make().action_space, steps, rows, seed)

    @property
    def tolerance(self) -> dict[str, float]:
        return self.contract.tolerance.get(self.family, EXACT)

    @property
    def episode_length(self) -> int:
        """Steps of one episode as the learner sees it (a whole trial in trial mode), without divergence."""
        return self.contract.length * (self.episodes_per_trial or 1)

    def __str__(self) -> str:
        mode = f"-{self.action_mode}" if self.action_mode else ""
        trial = f"-trial{self.episodes_per_trial}" if self.episodes_per_trial else ""
        return f"{_short(self.env_id)}-{self.family}{mode}{trial}"


def _cases() -> list[Any]:
    return [
        pytest.param(case, id=str(case))
        for env_id in REGISTERED
        if env_id in CONTRACTS
        for family in CONTRACTS[env_id].families
        for mode in CONTRACTS[env_id].action_modes[: 1 if family in CONTRACTS[env_id].first_mode_only else None]
        for trial in TRIAL_MODES
        for case in [Case(env_id, family, mode, trial)]
    ]


CASES = _cases()
# Bad input does not depend on the task family: one family per (id, action mode, trial mode).
ACTION_CASES = [p for p in CASES if p.values[0].family == "mixture"]


# ------------------------------------------------------------------ shared helpers
def _actions(space: gym.spaces.Box, steps: int, rows: int | None, seed: int) -> np.ndarray:
    """Random float32 actions ``(steps, rows, *shape)`` (``rows=None``: one env), a quarter of the
    space's width beyond each side so that clipping is exercised too."""
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    margin = 0.25 * (high - low)
    shape = (steps, *(() if rows is None else (rows,)), *space.shape)
    return np.random.default_rng(seed).uniform(low - margin, high + margin, size=shape).astype(np.float32)


@dataclass
class Rollout:
    """Per step ``(steps, rows, ...)``: the returned observation (the next episode's first one after an
    autoreset), the final observation where a row ended (else NaN), rewards and flags."""

    first: np.ndarray
    obs: np.ndarray
    final: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray

    @classmethod
    def of_steps(cls, first: np.ndarray, steps: list[tuple[np.ndarray, ...]]) -> Rollout:
        """From the first observations and, per step, ``(obs, final, reward, terminated, truncated)`` of all rows."""
        return cls(first, *(np.stack(column) for column in zip(*steps)))


def _final_where(done: np.ndarray, obs: np.ndarray, finals: Any) -> np.ndarray:
    """``finals[i]`` (an adapter's final observations) in the rows that ended, NaN elsewhere."""
    final = np.full_like(obs, np.nan)
    for i in np.flatnonzero(done):
        final[i] = finals[i]
    return final


def _single_rollouts(case: Case, seed: int, actions: np.ndarray, stress: bool) -> Rollout:
    """Row ``i``: a ``gym.make`` env reset with ``seed + i``, reset without a seed when an episode ends."""
    envs = [case.make(stress) for _ in range(actions.shape[1])]
    first = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
    steps = []
    for t in range(actions.shape[0]):
        rows = []
        for i, env in enumerate(envs):
            obs, reward, terminated, truncated, _ = env.step(actions[t, i])
            final = np.full_like(obs, np.nan)
            if terminated or truncated:
                final, (obs, _) = obs, env.reset()
            rows.append((obs, final, reward, terminated, truncated))
        steps.append(tuple(np.stack(column) for column in zip(*rows)))
    return Rollout.of_steps(first, steps)


def _vector_rollout(case: Case, seed: int, actions: np.ndarray, stress: bool) -> Rollout:
    vec = gym.make_vec(case.env_id, num_envs=actions.shape[1], **case.kwargs(stress))
    first, _ = vec.reset(seed=seed)
    steps = []
    for step_actions in actions:
        obs, reward, terminated, truncated, infos = vec.step(step_actions)
        final = _final_where(terminated | truncated, obs, infos.get("final_obs"))
        steps.append((obs, final, reward, terminated, truncated))
    return Rollout.of_steps(first, steps)


def _sb3_rollout(case: Case, seed: int, actions: np.ndarray, stress: bool) -> Rollout:
    vec = metaopt_envs.make_sb3_vec_env(case.env_id, actions.shape[1], seed=seed, **case.kwargs(stress))
    first = vec.reset()
    steps = []
    for step_actions in actions:
        obs, reward, done, infos = vec.step(step_actions)
        truncated = np.array([bool(info.get("TimeLimit.truncated", False)) for info in infos])
        final = _final_where(done, obs, [info.get("terminal_observation") for info in infos])
        steps.append((obs, final, reward, done & ~truncated, truncated))
    return Rollout.of_steps(first, steps)


def _make_adapters(
    env_id: str, num_envs: int, seed: int | None = None, **kwargs: Any
) -> tuple[gym.Env, VectorEnv, VecEnv]:
    """One configuration through the three adapters: ``gym.make``, ``gym.make_vec`` and the SB3 VecEnv of
    ``num_envs`` rows; reset with ``seed`` when one is given."""
    env, vec = gym.make(env_id, **kwargs), gym.make_vec(env_id, num_envs=num_envs, **kwargs)
    sb3 = metaopt_envs.make_sb3_vec_env(env_id, num_envs, seed=seed, **kwargs)
    if seed is not None:
        env.reset(seed=seed)
        vec.reset(seed=seed)
        sb3.reset()
    return env, vec, sb3


def _core_class(env_id: str):
    """The batched core class behind a registered id."""
    return load_env_creator(gym.spec(env_id).vector_entry_point).core_class


_ROLLOUTS: dict[tuple[Case, str], Rollout] = {}


def _rollout(case: Case, adapter: str) -> Rollout:
    """The stressed rollout of ``NUM_ENVS`` rows over two whole episodes and one more step, per adapter
    (``"single"``, ``"vector"``, ``"sb3"``), on one seed and one action sequence; cached per test process."""
    key = (case, adapter)
    if key not in _ROLLOUTS:
        actions = case.actions(2 * case.episode_length + 1, NUM_ENVS, seed=7)
        run = {"single": _single_rollouts, "vector": _vector_rollout, "sb3": _sb3_rollout}[adapter]
        _ROLLOUTS[key] = run(case, SEED, actions, stress=True)
    return _ROLLOUTS[key]


def _episode(env: gym.Env, seed: int, actions: np.ndarray) -> list[tuple]:
    """Reset with ``seed``, then step through ``actions`` (resetting without a seed when an episode ends)."""
    obs, _ = env.reset(seed=seed)
    out = [(obs,)]
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        out.append((obs, reward, terminated, truncated))
        if terminated or truncated:
            out.append((env.reset()[0],))
    return out


def _assert_same_episodes(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for t, (x, y) in enumerate(zip(a, b)):
        np.testing.assert_array_equal(x[0], y[0], err_msg=f"entry {t}")
        assert x[1:] == y[1:], t


# ------------------------------------------------------------------ registry
def test_every_registered_id_has_a_contract():
    assert REGISTERED, "importing metaopt_envs registers the MetaOpt-* ids"
    missing = set(REGISTERED) - set(CONTRACTS)
    assert not missing, f"add these ids to CONTRACTS in tests/test_contract.py: {sorted(missing)}"
    assert set(CONTRACTS) <= set(REGISTERED)


@pytest.mark.parametrize("env_id", REGISTERED)
def test_nothing_registered_repeats_the_episode_length(env_id):
    spec = gym.spec(env_id)
    assert spec.max_episode_steps is None  # the core owns the episode length
    assert isinstance(spec.entry_point, str) and isinstance(spec.vector_entry_point, str)
    env = gym.make(env_id, **CONTRACTS[env_id].small)
    assert env.spec.max_episode_steps is None
    assert not isinstance(env, gym.wrappers.TimeLimit)
    assert env.unwrapped.core.num_decisions == CONTRACTS[env_id].length
    parameters = inspect.signature(_core_class(env_id)).parameters
    assert set(parameters) >= {"num_envs", CONTRACTS[env_id].length_argument}
    # metaopt_envs.core.base.CoreConstructor: Core(num_envs=B) alone builds it, every other argument has a default.
    assert all(p.default is not p.empty for name, p in parameters.items() if name != "num_envs")


def test_make_core_takes_only_metaopt_ids():
    with pytest.raises(ValueError, match=r"env_id must be a registered MetaOpt-\* id, got 'CartPole-v1'"):
        metaopt_envs.make_core("CartPole-v1")


# ------------------------------------------------------------------ every case
@pytest.mark.parametrize("case", CASES)
def test_env_checkers(case):
    env = case.make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checker warning is a contract failure ...
        space = env.action_space
        if not (np.all(space.low == -1.0) and np.all(space.high == 1.0)):  # ... but Ensemble's simplex mode is
            warnings.filterwarnings("ignore", message="We recommend you to use a symmetric")  # [0, 1] by design
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=True)
        sb3_check_env(env, warn=True)


@pytest.mark.parametrize("case", CASES)
def test_env_pickles_fresh_and_mid_episode(case):
    actions = case.actions(case.episode_length + 2, None, seed=1)
    fresh = case.make(stress=True)
    _assert_same_episodes(_episode(fresh, 5, actions), _episode(pickle.loads(pickle.dumps(fresh)), 5, actions))

    env = case.make(stress=True)
    _episode(env, 5, actions[:2])
    clone = pickle.loads(pickle.dumps(env))
    assert clone is not env
    for action in actions[2:]:
        a, b = env.step(action), clone.step(action)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:4] == b[1:4]
        if a[2] or a[3]:
            np.testing.assert_array_equal(env.reset()[0], clone.reset()[0])  # the row's next task, too


@pytest.mark.parametrize("case", CASES)
def test_same_seed_same_rollout(case):
    actions = case.actions(2 * case.episode_length + 1, None, seed=2)
    env_a, env_b = case.make(stress=True), case.make(stress=True)
    first = _episode(env_a, 9, actions)
    _assert_same_episodes(first, _episode(env_b, 9, actions))
    _assert_same_episodes(first, _episode(env_a, 9, actions))  # re-seeding replays the run
    # The vector env is deterministic too.
    a, b = (_vector_rollout(case, 9, case.actions(3, NUM_ENVS, seed=2), stress=True) for _ in range(2))
    for name in (f.name for f in fields(Rollout)):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("case", CASES)
def test_observations_stay_in_space(case):
    """Every adapter, every step: after divergence (LR's stress kwargs) and autoreset, final observations too."""
    space = case.make().observation_space
    for adapter in ("single", "vector", "sb3"):
        run = _rollout(case, adapter)
        assert all(space.contains(row) for row in run.first), adapter
        for t in range(run.obs.shape[0]):
            for i in range(NUM_ENVS):
                assert space.contains(run.obs[t, i]), (adapter, t, i, run.obs[t, i])
                ended = run.terminated[t, i] or run.truncated[t, i]
                assert ended != np.isnan(run.final[t, i]).all(), (adapter, t, i)
                if ended:
                    assert space.contains(run.final[t, i]), (adapter, t, i, run.final[t, i])
        assert np.isfinite(run.reward).all(), adapter
        assert (run.terminated | run.truncated).sum() >= NUM_ENVS, "the rollout crosses autoresets"


@pytest.mark.parametrize("case", CASES)
def test_batched_rows_equal_single_envs(case):
    """Row i of gym.make_vec and of the SB3 VecEnv seeded s is gym.make seeded s + i (per-family tolerance)."""
    single = _rollout(case, "single")
    for adapter in ("vector", "sb3"):
        batched = _rollout(case, adapter)
        for name in ("first", "obs", "reward"):
            np.testing.assert_allclose(
                getattr(batched, name), getattr(single, name), **case.tolerance, err_msg=f"{adapter} {name}"
            )
        np.testing.assert_allclose(batched.final, single.final, **case.tolerance, err_msg=f"{adapter} final")


@pytest.mark.parametrize("case", CASES)
def test_adapters_report_the_same_flags(case):
    """gym.make, gym.make_vec and the SB3 VecEnv: identical terminated and truncated, never both."""
    single = _rollout(case, "single")
    for adapter in ("vector", "sb3"):
        run = _rollout(case, adapter)
        np.testing.assert_array_equal(run.terminated, single.terminated, err_msg=f"{adapter} terminated")
        np.testing.assert_array_equal(run.truncated, single.truncated, err_msg=f"{adapter} truncated")
    assert not (single.terminated & single.truncated).any()
    if case.episodes_per_trial is not None:
        assert not single.truncated.any()  # a trial ends by design: a termination


def _adapters(case: Case):
    """Each adapter of ``case``, freshly reset: (name of the action argument, rows or None, action space of
    one env, step function returning the observation)."""
    env, vec, sb3 = _make_adapters(case.env_id, 2, seed=0, **case.kwargs())
    yield "action", None, env.action_space, lambda a: env.step(a)[0]
    yield "actions", 2, vec.single_action_space, lambda a: vec.step(a)[0]
    yield "actions", 2, sb3.action_space, lambda a: sb3.step(a)[0]


@pytest.mark.parametrize("case", ACTION_CASES)
def test_bad_actions_raise_and_out_of_range_ones_are_clipped(case):
    for (label, rows, space, step), (_, _, _, twin_step) in zip(_adapters(case), _adapters(case)):
        shape = tuple(space.shape) if rows is None else (rows, *space.shape)
        good = np.zeros(shape, np.float64) + 0.5 * (space.low + space.high)
        nan = good.copy()
        nan.reshape(-1)[-1] = np.nan
        bad = [
            (nan, rf"{label} must be finite.*NaN or inf"),
            (np.full(shape, np.inf), rf"{label} must be finite"),
            (np.zeros((*shape, 2)), rf"{label} must have shape"),
            (np.zeros(shape[:-1] + (shape[-1] + 1,)), rf"{label} must have shape"),
            (good.astype(object), rf"{label} must be real numbers.*shape.*dtype object"),
            (np.full(shape, "0.5"), rf"{label} must be real numbers.*dtype <U3"),
            (torch.zeros(shape, requires_grad=True), rf"{label} must not require grad.*detach"),
        ]
        for value, pattern in bad:
            with pytest.raises(ValueError, match=pattern):
                step(value)
        # Rejected actions left the state untouched: the env continues as its fresh twin does, and
        # finite out-of-range actions (float64 beyond float32's range too) are clipped into the space.
        huge = np.where(np.arange(np.prod(shape)).reshape(shape) % 2, 1e39, -1e39)
        clipped = np.where(huge > 0, space.high, space.low).astype(np.float32)
        np.testing.assert_array_equal(step(huge), twin_step(clipped))
        np.testing.assert_array_equal(step(torch.as_tensor(good)), twin_step(good.astype(np.float32)))


# ------------------------------------------------------------------ episode length (one owner: the core)
LONGER = {
    "MetaOpt-LR-v0": {"horizon": 120, "task_family": "quadratic"},  # more than the old registered 100
    "MetaOpt-Ensemble-v0": {"horizon": 310, "warmup": 16, "task_family": "regimes"},  # 300
    "MetaOpt-HPO-v0": {"budget": 40, "task_family": "branin"},
    "MetaOpt-Acquisition-v0": {"budget": 40, "task_family": "branin", "num_candidates": 3, "num_local": 1},
}  # 32


def _steps_until_done(step, action) -> int:
    for t in range(1, 10_000):
        if step(action):
            return t
    raise AssertionError("the episode never ended")


@pytest.mark.parametrize("env_id", REGISTERED)
def test_length_keyword_is_obeyed_by_every_adapter(env_id):
    """``gym.make(id, horizon=n)`` runs n decisions: no registered constant cuts it (it cut LR at 100, HPO at 32)."""
    kwargs = LONGER[env_id]
    n = kwargs[CONTRACTS[env_id].length_argument]
    env, vec, sb3 = _make_adapters(env_id, 2, seed=0, **kwargs)
    action = np.full(env.action_space.shape, 0.5 * (env.action_space.low + env.action_space.high) - 0.4, np.float32)
    assert _steps_until_done(lambda a: any(env.step(a)[2:4]), action) == n
    assert _steps_until_done(lambda a: vec.step(a)[3].all(), np.stack([action] * 2)) == n
    assert _steps_until_done(lambda a: sb3.step(a)[2].all(), np.stack([action] * 2)) == n


def test_lr_decisions_are_horizon_over_action_every():
    env = gym.make("MetaOpt-LR-v0", task_family="quadratic", horizon=12, action_every=3)
    env.reset(seed=0)
    assert _steps_until_done(lambda a: env.step(a)[3], np.array([-0.8], np.float32)) == 4


@pytest.mark.parametrize("env_id", REGISTERED)
def test_user_time_limit_acts_as_gymnasium_time_limit(env_id):
    """A ``max_episode_steps`` the user passes: gym.make wraps TimeLimit, gym.make_vec applies the same cut."""
    small = CONTRACTS[env_id].small
    env = gym.make(env_id, max_episode_steps=3, **small)
    assert env.spec.max_episode_steps == 3
    with pytest.warns(UserWarning, match="max_episode_steps=3"):
        vec = gym.make_vec(env_id, num_envs=1, max_episode_steps=3, **small)
    action = np.zeros(env.action_space.shape, np.float32) - 0.5
    env.reset(seed=0)
    vec.reset(seed=0)
    for t in range(3):
        single = env.step(action)[2:4]
        batched = vec.step(action[None])[2:4]
        assert single == (False, t == 2) == (bool(batched[0][0]), bool(batched[1][0]))
    # A limit longer than the episode changes nothing: the core ends it.
    long_env = gym.make(env_id, max_episode_steps=1000, **small)
    long_env.reset(seed=0)
    assert _steps_until_done(lambda a: long_env.step(a)[3], action) == CONTRACTS[env_id].length
    with pytest.raises(ValueError, match="max_episode_steps"):
        gym.make_vec(env_id, num_envs=1, max_episode_steps=0, **small)
    with pytest.raises(ValueError, match=rf"max_episode_steps is not an argument of the {env_id} core.*ends episodes"):
        metaopt_envs.make_sb3_vec_env(env_id, 1, max_episode_steps=3, **small)


@pytest.mark.parametrize("env_id", REGISTERED)
def test_spec_round_trip(env_id):
    """``gym.make(env.spec)`` rebuilds the same env: the spec carries every keyword, nothing else."""
    env = gym.make(env_id, **CONTRACTS[env_id].small)
    again = gym.make(env.spec)
    assert again.spec.kwargs == env.spec.kwargs
    assert again.spec.max_episode_steps is None
    actions = _actions(env.action_space, CONTRACTS[env_id].length + 1, None, seed=4)
    _assert_same_episodes(_episode(env, 3, actions), _episode(again, 3, actions))


# ------------------------------------------------------------------ bad constructor arguments and seeds
def _bad_values(default: Any) -> list[Any]:
    """Values that must be rejected for an argument with this default (judged by its type)."""
    if isinstance(default, bool):
        return [1, "yes"]
    if isinstance(default, int):
        return [True, 2.5, -1]
    if isinstance(default, float):
        return [math.nan, math.inf, -math.inf, True, "1.0"]
    if isinstance(default, tuple) and len(default) == 2 and all(isinstance(x, float) for x in default):
        return [(math.nan, default[1]), (default[0], math.inf), (default[0],), default[0], default[::-1]]
    return []


def _typed_arguments(env_id: str) -> list[Any]:
    params = []
    for name, parameter in inspect.signature(_core_class(env_id)).parameters.items():
        for value in _bad_values(parameter.default):
            params.append(pytest.param(env_id, name, value, id=f"{_short(env_id)}-{name}={value!r}"))
    return params


@pytest.mark.parametrize(("env_id", "name", "value"), [p for env_id in REGISTERED for p in _typed_arguments(env_id)])
def test_bad_core_argument_names_itself(env_id, name, value):
    """Every int, float, bool and (low, high) argument of a core: bools are not ints, NaN and inf are not
    floats, malformed pairs are not pairs; the message names the argument and shows the value."""
    kwargs = {**CONTRACTS[env_id].small, name: value}
    with pytest.raises(ValueError, match=rf"{name}\b.*(must|needs|is too short).*{_escaped(value)}"):
        _core_class(env_id)(**kwargs)


def _escaped(value: Any) -> str:
    text = repr(tuple(value)) if isinstance(value, tuple) else repr(value)
    return re.escape(text)


@pytest.mark.parametrize("env_id", REGISTERED)
def test_bad_device_seed_and_num_envs(env_id):
    small = CONTRACTS[env_id].small
    with pytest.raises(ValueError, match=r"device must be .*'cpu'.*got 'tpu'"):
        gym.make(env_id, device="tpu", **small)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device='cuda' needs CUDA.*'cpu'"):
            gym.make(env_id, device="cuda", **small)
    for num_envs in (True, 0, 2.0):
        with pytest.raises(ValueError, match=rf"num_envs must be an int >= 1, got {num_envs!r}"):
            gym.make_vec(env_id, num_envs=num_envs, **small)
    for trial in (True, 0, 1.5):
        with pytest.raises(ValueError, match=rf"episodes_per_trial must be an int >= 1.*got {trial!r}"):
            gym.make(env_id, episodes_per_trial=trial, **small)
    env, vec, sb3 = _make_adapters(env_id, 2, **small)
    for bad in (-1, 1.5, True, 2**63, "7"):
        with pytest.raises(ValueError, match=r"seed must be None or an int in \[0, 2\*\*63 - 1\]"):
            env.reset(seed=bad)
        with pytest.raises(ValueError, match=r"seed must be None or an int in \[0, 2\*\*63 - 2\] \(row i"):
            vec.reset(seed=bad)
        with pytest.raises(ValueError, match=r"seed must be None or an int in \[0, 2\*\*63 - 2\] \(row i"):
            sb3.seed(bad)
    with pytest.raises(ValueError, match=r"seed must be None or an int in \[0, 2\*\*63 - 2\]"):
        vec.reset(seed=2**63 - 1)  # row 1 would overflow
    with pytest.raises(ValueError, match=r"seed must be an int or a list of 2 ints"):
        vec.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError, match=r"seed\[i\] must be None or an int"):
        vec.reset(seed=[1, -2])
    # The largest seeds are fine.
    env.reset(seed=2**63 - 1)
    vec.reset(seed=2**63 - 2)
    sb3.seed(2**63 - 2)
    sb3.reset()


def test_shared_checks_accept_numpy_and_config_values():
    """What configs and numpy hand over passes the shared checks, in its canonical type."""
    from metaopt_envs.core import checks

    assert checks.integer("horizon", np.int64(7)) == 7 and type(checks.integer("horizon", np.int32(7))) is int
    assert checks.finite_float("loss_clip", np.float32(2.5), low=0.0) == 2.5
    assert checks.finite_float("loss_clip", 3, low=0.0) == 3.0
    assert checks.float_pair("lr_range", [1e-4, 10], low=0.0, low_open=True) == (1e-4, 10.0)  # a YAML list
    assert checks.float_pair("lr_range", np.array([0.1, 1.0])) == (0.1, 1.0)
    assert checks.choice("action_mode", np.str_("relative"), ("absolute", "relative")) == "relative"
    assert checks.boolean("observe_validation", np.bool_(True)) is True
    assert checks.device("auto").type in ("cpu", "cuda") and checks.device(torch.device("cpu")).type == "cpu"
    assert checks.seeds(np.int64(5), 3) == [5, 6, 7] and checks.seeds(np.arange(3), 3) == [0, 1, 2]
    with pytest.raises(ValueError, match=r"action_mode must be one of 'absolute', 'relative', got 1"):
        checks.choice("action_mode", 1, ("absolute", "relative"))
    with pytest.raises(ValueError, match=r"lr_range must be a \(low, high\) pair .* got 'ab'"):
        checks.float_pair("lr_range", "ab")


# ------------------------------------------------------------------ regressions
QUADRATIC_LR = {"task_family": "quadratic", "horizon": 4}  # the smallest LR env, for single-defect regressions


def test_regression_simplex_trial_feeds_back_the_clipped_action():
    """Ensemble simplex mode in RL² trials clamped the fed-back action to [-1, 1], not to the action space
    [0, 1], so a negative action put the observation outside its declared space."""
    for make in (
        lambda: gym.make_vec(
            "MetaOpt-Ensemble-v0", num_envs=2, action_mode="simplex", episodes_per_trial=2, horizon=3, warmup=16
        ),
        lambda: gym.make("MetaOpt-Ensemble-v0", action_mode="simplex", episodes_per_trial=2, horizon=3, warmup=16),
    ):
        env = make()
        env.reset(seed=0)
        base_dim = len(env.unwrapped.core.core.observation_names)
        shape = env.action_space.shape
        obs = env.step(np.full(shape, -0.5, np.float32))[0]
        assert env.observation_space.contains(obs)
        np.testing.assert_array_equal(obs[..., base_dim : base_dim + 8], 0.0)
        obs = env.step(np.full(shape, 3.0, np.float32))[0]
        np.testing.assert_array_equal(obs[..., base_dim : base_dim + 8], 1.0)


def test_regression_divergence_on_the_last_decision_is_a_termination_everywhere():
    """A run that diverged on its last decision got (True, True) from gym.make (the registered TimeLimit of
    100 steps fired on the core's terminating step) and (True, False) from gym.make_vec and SB3.
    Now (terminated=True, truncated=False) from all three, at the default horizon."""
    kwargs = {"task_family": "quadratic", "lr_range": (1e-4, 1e3)}
    horizon = gym.make("MetaOpt-LR-v0", **kwargs).unwrapped.core.horizon
    actions = np.full((horizon, 1), -0.9, np.float32)  # small rates, then lr 1e3 on the last decision
    actions[-1] = 1.0
    env, vec, sb3 = _make_adapters("MetaOpt-LR-v0", 1, seed=0, **kwargs)
    flags = [env.step(a)[2:4] for a in actions]
    assert flags == [(False, False)] * (horizon - 1) + [(True, False)]
    assert [tuple(bool(x[0]) for x in vec.step(a[None])[2:4]) for a in actions] == flags
    assert not any(sb3.step(a[None])[2][0] for a in actions[:-1])
    _, _, done, infos = sb3.step(actions[-1][None])
    assert done[0] and infos[0]["TimeLimit.truncated"] is False


# Each defect's argument: the message names it, shows the value and says what is allowed.
CONSTRUCTION_ERRORS = [
    ("MetaOpt-LR-v0", {"max_lr_change": math.inf}, r"max_lr_change must be a finite number > 1.*got inf"),
    ("MetaOpt-LR-v0", {"divergence_penalty": math.inf}, r"divergence_penalty must be a finite number >= 0.*got inf"),
    ("MetaOpt-LR-v0", {"initial_lr": math.nan}, r"initial_lr must be a finite number in \[0.0001, 10\].*got nan"),
    ("MetaOpt-LR-v0", {"horizon": True}, r"horizon must be an int >= 1.*got True"),
    ("MetaOpt-LR-v0", {"lr_range": (1.0,)}, r"lr_range must be a \(low, high\) pair.*got \(1.0,\)"),
    ("MetaOpt-LR-v0", {"lr_range": 0.1}, r"lr_range must be a \(low, high\) pair.*got 0.1"),
    ("MetaOpt-LR-v0", {"observe_validation": 1}, r"observe_validation must be True or False, got 1"),
    ("MetaOpt-Ensemble-v0", {"forecasters": "last_value"}, r"forecasters must be a list or tuple.*got 'last_value'"),
    ("MetaOpt-Ensemble-v0", {"forecasters": ("last", 3)}, r"forecasters must be a list or tuple of .* names"),
    ("MetaOpt-Ensemble-v0", {"forecaster_window": 8}, r"forecaster_window=8 is too short for 'ar4'"),
    ("MetaOpt-Ensemble-v0", {"logit_scale": True}, r"logit_scale must be a finite number in \(0, 1000\), got True"),
    ("MetaOpt-HPO-v0", {"budget": True}, r"budget must be an int >= 1.*got True"),
    ("MetaOpt-HPO-v0", {"reward_mode": "loss"}, r"reward_mode must be one of 'log_regret', 'regret', got 'loss'"),
    ("MetaOpt-Acquisition-v0", {"num_local": 6}, r"num_local must be smaller than num_candidates=6.*got 6"),
    ("MetaOpt-Acquisition-v0", {"num_candidates": 1}, r"num_candidates must be an int >= 2.*got 1"),
    ("MetaOpt-Acquisition-v0", {"y_transform": "exp"}, r"y_transform must be one of 'log', 'none', got 'exp'"),
    ("MetaOpt-Acquisition-v0", {"candidate_pool": 3}, r"candidate_pool must be 0 .*>= num_candidates=6.*got 3"),
]


@pytest.mark.parametrize(
    ("env_id", "kwargs", "pattern"),
    [
        pytest.param(*row, id=f"{_short(row[0])}-{'-'.join(f'{k}={v!r}' for k, v in row[1].items())}")
        for row in CONSTRUCTION_ERRORS
    ],
)
def test_regression_construction_errors_name_argument_value_and_allowed(env_id, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        gym.make(env_id, **{**CONTRACTS[env_id].small, **kwargs})
    with pytest.raises(ValueError, match=pattern):
        metaopt_envs.make_sb3_vec_env(env_id, 2, **{**CONTRACTS[env_id].small, **kwargs})


def test_regression_reset_seed_beyond_int64_names_the_range():
    """``reset(seed=2**63)`` failed with numpy's 'Overflow when unpacking long long'."""
    env = gym.make("MetaOpt-LR-v0", **QUADRATIC_LR)
    with pytest.raises(ValueError, match=r"seed must be None or an int in \[0, 2\*\*63 - 1\], got 9223372036854775808"):
        env.reset(seed=2**63)


def test_regression_finite_float64_action_is_clipped_not_overflowed():
    """A float64 action of 1e39 was cast to float32 (inf) and rejected as 'NaN or inf', though documented as
    clipped."""
    env, twin = (gym.make("MetaOpt-LR-v0", **QUADRATIC_LR) for _ in range(2))
    env.reset(seed=0)
    twin.reset(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning from a cast either
        obs = env.step(np.array([1e39]))[0]
    np.testing.assert_array_equal(obs, twin.step(np.array([1.0], np.float32))[0])
