"""The batched core of MetaOpt-Ensemble-v0: B data streams, each forecast by a weighted pool.

Every row holds one stream ``values[b, :T]`` and the predictions of the K base
forecasters for every step, ``forecasts[b, k, t]`` (made from ``values[b, :t]``
only). The forecasters do not depend on the agent, so they are computed once
per reset for the whole episode; a step is then a handful of ``(B, K)``
tensor operations. See :class:`metaopt_envs.ensemble.env.MetaOptEnsembleEnv`
for the documentation of spaces, reward and episode.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metaopt_envs.core import BatchedCore, StepResult, allocator, checks, resolve_device, rng, seeds_to_keys
from metaopt_envs.core.family import SPLIT_IDS, check_split
from metaopt_envs.core.registry import env_task_family
from metaopt_envs.ensemble.families import DEFAULT_FORECASTERS, StreamFamily, forecast
from metaopt_envs.ensemble.forecasters import FORECASTER_PATTERNS, check_forecasters

ACTION_MODES = ("logits", "simplex", "residual")
DEFAULT_SHARE_FILTER = (1.0, 0.01)
"""The Fixed-Share filter ``(eta, alpha)`` that ``action_mode="residual"`` adds when ``share_filters`` is not given."""
FAST_RATE, SLOW_RATE = 0.3, 0.03
"""EMA rates of the two error time scales (half-lives of about 2 and 23 steps)."""
OBS_CLIP = 100.0
_EPS = 1e-6


def feature_names(
    forecaster_names: tuple[str, ...], share_filters: tuple[tuple[float, float], ...] = ()
) -> tuple[str, ...]:
    """Names of the observation features for a pool of forecasters (5K + 4 of them, then K per share filter)."""
    blocks = ("error", "log_sq_error_fast", "log_sq_error_slow", "weight", "forecast_spread")
    per = tuple(f"{block}[{name}]" for block in blocks for name in forecaster_names)
    filters = tuple(
        f"share_log_weight[eta={eta:g},alpha={alpha:g}][{name}]"
        for eta, alpha in share_filters
        for name in forecaster_names
    )
    return per + ("ensemble_error", "ensemble_log_sq_error_fast", "ensemble_log_sq_error_slow", "progress") + filters


def check_share_filters(share_filters: Any) -> tuple[tuple[float, float], ...]:
    """The checked ``share_filters``: a list of ``[eta, alpha]`` pairs, ``eta > 0`` and ``0 < alpha <= 1``."""
    allowed = (
        "share_filters must be a list of [eta, alpha] pairs (Fixed-Share filters whose log-weights are observed; "
        f"eta > 0, 0 < alpha <= 1), e.g. [[1.0, 0.01], [1.0, 0.1]]; got {share_filters!r}"
    )
    if share_filters is None:
        return ()
    if isinstance(share_filters, (str, bytes)) or not isinstance(share_filters, (tuple, list)):
        raise ValueError(allowed)
    out = []
    for pair in share_filters:
        if isinstance(pair, (str, bytes)) or not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(allowed)
        try:
            eta, alpha = float(pair[0]), float(pair[1])
        except (TypeError, ValueError):
            raise ValueError(allowed) from None
        if not (math.isfinite(eta) and eta > 0.0 and math.isfinite(alpha) and 0.0 < alpha <= 1.0):
            raise ValueError(allowed)
        out.append((eta, alpha))
    return tuple(out)


def share_filter_update(log_weights: torch.Tensor, losses: torch.Tensor, eta: float, alpha: float) -> torch.Tensor:
    """One Fixed-Share step on ``(..., K)`` log-weights: ``v = w exp(-eta l)`` normalized, ``(1 - alpha) v + alpha/K``.

    The same rule as ``agents.controllers.ensemble.FixedShare`` (tested), in torch; the result is bounded
    below by ``log(alpha / K)``, so it is always finite.
    """
    k = log_weights.shape[-1]
    log_v = torch.log_softmax(log_weights - eta * losses, dim=-1)
    keep = math.log1p(-alpha) if alpha < 1.0 else -math.inf
    return torch.logaddexp(log_v + keep, torch.full_like(log_v, math.log(alpha / k)))


def _ema_closed_form(x: torch.Tensor, rate: float) -> torch.Tensor:
    """EMA over the last axis of ``x: (..., m)``, started at the mean of ``x``: the value after m updates."""
    m = x.shape[-1]
    decay = (1.0 - rate) ** torch.arange(m - 1, -1, -1, dtype=x.dtype, device=x.device)
    return (1.0 - rate) ** m * x.mean(-1) + rate * (x * decay).sum(-1)


def _expert_regime(name: str) -> int:
    try:
        regime = int(name[len("expert") :])
    except ValueError:
        regime = -1
    if regime < 0:
        raise ValueError(f"forecasters: an expert is named 'expert<r>' with r >= 0 a regime index, got {name!r}")
    return regime


class EnsembleCore(BatchedCore):
    """Ensemble weighting on ``num_envs`` streams; see ``MetaOptEnsembleEnv`` for the documentation."""

    def __init__(
        self,
        num_envs: int = 1,
        task_family: str | StreamFamily = "mixture",
        task_family_kwargs: dict[str, Any] | None = None,
        split: str = "train",
        forecasters: tuple[str, ...] | list[str] = DEFAULT_FORECASTERS,
        forecaster_window: int = 40,
        horizon: int = 300,
        warmup: int = 50,
        action_mode: str = "logits",
        logit_scale: float = 4.0,
        loss_clip: float = 25.0,
        share_filters: list[list[float]] | tuple[tuple[float, float], ...] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        num_envs = checks.integer("num_envs", num_envs)
        horizon = checks.integer("horizon", horizon, note="decisions per episode")
        warmup = checks.integer("warmup", warmup, minimum=8, note="steps that set the error scale")
        checks.choice("action_mode", action_mode, ACTION_MODES)
        logit_scale = checks.finite_float("logit_scale", logit_scale, low=0.0, high=1e3, low_open=True, high_open=True)
        loss_clip = checks.finite_float("loss_clip", loss_clip, low=0.0, low_open=True)
        forecaster_window = checks.integer("forecaster_window", forecaster_window, minimum=8)
        self.share_filters = check_share_filters(share_filters)
        if action_mode == "residual" and not self.share_filters:
            self.share_filters = (DEFAULT_SHARE_FILTER,)
        if (
            isinstance(forecasters, str)
            or not isinstance(forecasters, (tuple, list))
            or not all(isinstance(name, str) for name in forecasters)
        ):
            raise ValueError(
                "forecasters must be a list or tuple of at least 2 forecaster names (e.g. ('last', 'ma4', 'ar2'); "
                f"patterns: {', '.join(FORECASTER_PATTERNS)}), got {forecasters!r}"
            )
        forecasters = tuple(forecasters)
        if len(forecasters) < 2:
            raise ValueError(f"forecasters must name at least 2 forecasters, got {forecasters!r}")
        pool = [name for name in forecasters if not name.startswith("expert")]
        if pool:
            try:
                check_forecasters(pool, forecaster_window)
            except ValueError as error:  # its messages say "window", the argument here is forecaster_window
                message = str(error).replace("window=", "forecaster_window=")
                raise ValueError(f"forecasters={forecasters!r}: {message}") from None
        self.experts = tuple(i for i, name in enumerate(forecasters) if name.startswith("expert"))
        self.expert_regimes = [_expert_regime(forecasters[i]) for i in self.experts]

        self.num_envs = int(num_envs)
        self.device = resolve_device(device)
        allocator.apply_default()  # freed step tensors stay in the heap: no page faults per step
        self.family = env_task_family("ensemble", StreamFamily, task_family, task_family_kwargs, self.device)
        self.split = check_split(split)
        self.forecaster_names = forecasters
        self.forecaster_window = int(forecaster_window)
        if self.experts and getattr(self.family, "name", None) != "switching_ar":
            raise ValueError(
                "forecasters 'expert<r>' (the true AR(2) model of regime r) need task_family='switching_ar', "
                f"got {getattr(self.family, 'name', self.family)!r}"
            )
        self.pool = tuple(name for name in forecasters if not name.startswith("expert"))
        if self.pool:
            forecast(torch.zeros(1, 4), self.pool, self.forecaster_window)  # validates the names
        self.num_forecasters = k = len(forecasters)
        self.horizon, self.warmup = int(horizon), int(warmup)
        self.num_decisions = self.horizon
        self.length = self.warmup + self.horizon
        self.action_mode, self.logit_scale, self.loss_clip = action_mode, float(logit_scale), float(loss_clip)

        self.observation_names = feature_names(forecasters, self.share_filters)
        width = 5 * k + 4 + k * len(self.share_filters)
        self.single_observation_space = gym.spaces.Box(-OBS_CLIP, OBS_CLIP, (width,), dtype=np.float32)
        low = 0.0 if action_mode == "simplex" else -1.0
        self.single_action_space = gym.spaces.Box(low, 1.0, (k,), dtype=np.float32)

        b, t, dev = self.num_envs, self.length, self.device
        self.row_key = seeds_to_keys(0, b, dev)
        self.episode_index = torch.zeros(b, dtype=torch.int64, device=dev)
        self.inner_episode = torch.zeros(b, dtype=torch.int64, device=dev)
        self.task_key = torch.zeros(b, dtype=torch.int64, device=dev)
        self.values = torch.zeros(b, t, device=dev)
        self.regime = torch.zeros(b, t, dtype=torch.int64, device=dev)
        self.stream_family_index = torch.zeros(b, dtype=torch.int64, device=dev)
        self.forecasts = torch.zeros(b, k, t, device=dev)
        self.sigma = torch.ones(b, device=dev)
        self.t = torch.full((b,), self.warmup, dtype=torch.int64, device=dev)
        self.weights = torch.full((b, k), 1.0 / k, device=dev)
        self.error = torch.zeros(b, k, device=dev)
        self.sq_fast, self.sq_slow = torch.zeros(b, k, device=dev), torch.zeros(b, k, device=dev)
        self.ens_error = torch.zeros(b, device=dev)
        self.ens_fast, self.ens_slow = torch.zeros(b, device=dev), torch.zeros(b, device=dev)
        self.share_log_weights = torch.full((b, len(self.share_filters), k), -math.log(k), device=dev)
        self.reset_rows(torch.ones(b, dtype=torch.bool, device=dev), keys=self.row_key)

    # ------------------------------------------------------------------ contract
    def reset_rows(self, rows: torch.Tensor, keys: torch.Tensor | None = None, same_task: bool = False) -> None:
        index = rows.nonzero().squeeze(-1)
        if index.numel() == 0:
            return
        self.advance_keys(index, keys, same_task, SPLIT_IDS[self.split])
        task_key = self.task_key[index]
        stream = self.family.sample_stream(
            task_key, rng.fold(task_key, 1, self.inner_episode[index]), self.length, self.split
        )
        values = stream["values"].to(torch.float32)
        forecasts = self._forecast(values, stream)
        self.values[index], self.regime[index] = values, stream["regime"]
        self.stream_family_index[index] = stream["family"]
        self.forecasts[index] = forecasts

        # The error scale: RMS one-step change over the warm-up (the last-value forecaster's error),
        # floored relative to the level so that a flat warm-up cannot blow the errors up.
        head = values[:, : self.warmup].to(torch.float64)
        rms_change = head.diff(dim=-1).square().mean(-1).sqrt()
        rms_value = head.square().mean(-1).sqrt()
        sigma = torch.maximum(rms_change, 1e-3 * rms_value + 1e-6)
        self.sigma[index] = sigma.to(torch.float32)

        # Error statistics from the second half of the warm-up (forecasters have history by then),
        # with uniform weights: the first observation already carries every feature.
        start = self.warmup // 2
        errors = (forecasts[:, :, start : self.warmup].to(torch.float64) - head[:, None, start:]) / sigma[:, None, None]
        ens = errors.mean(1)
        self.error[index] = errors[:, :, -1].to(torch.float32)
        self.sq_fast[index] = _ema_closed_form(errors.square(), FAST_RATE).to(torch.float32)
        self.sq_slow[index] = _ema_closed_form(errors.square(), SLOW_RATE).to(torch.float32)
        self.ens_error[index] = ens[:, -1].to(torch.float32)
        self.ens_fast[index] = _ema_closed_form(ens.square(), FAST_RATE).to(torch.float32)
        self.ens_slow[index] = _ema_closed_form(ens.square(), SLOW_RATE).to(torch.float32)
        self.weights[index] = 1.0 / self.num_forecasters
        self.t[index] = self.warmup
        if self.share_filters:
            # The filters run over the same warm-up errors from uniform weights, so the first
            # observation already carries their posterior (a controller restarts at uniform).
            sq = errors.clamp(-OBS_CLIP, OBS_CLIP).square()
            log_w = torch.full(
                (index.numel(), len(self.share_filters), self.num_forecasters),
                -math.log(self.num_forecasters),
                dtype=torch.float64,
                device=self.device,
            )
            for step in range(sq.shape[-1]):
                log_w = torch.stack(
                    [
                        share_filter_update(log_w[:, j], sq[:, :, step], eta, alpha)
                        for j, (eta, alpha) in enumerate(self.share_filters)
                    ],
                    dim=1,
                )
            self.share_log_weights[index] = log_w.to(torch.float32)

    def _forecast(self, values: torch.Tensor, stream: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(n, K, T)`` forecasts of the pool, with the regime experts (if any) in their places."""
        n, length = values.shape
        out = torch.zeros(n, self.num_forecasters, length, device=values.device)
        if self.pool:
            pool_index = [i for i in range(self.num_forecasters) if i not in self.experts]
            out[:, pool_index] = forecast(values, self.pool, self.forecaster_window).to(torch.float32)
        if self.experts:
            params = stream["regime_params"]  # (n, R, 2): phi1, phi2 of each regime
            lag1 = torch.nn.functional.pad(values, (1, 0))[:, :length]
            lag2 = torch.nn.functional.pad(values, (2, 0))[:, :length]
            for column, regime in zip(self.experts, self.expert_regimes):
                if regime < params.shape[1]:  # a regime the task does not have predicts 0
                    out[:, column] = params[:, regime, 0:1] * lag1 + params[:, regime, 1:2] * lag2
        return out

    def _current_forecasts(self) -> torch.Tensor:
        """``(B, K)`` predictions of the value at each row's current step (the last one once ended)."""
        t = self.t.clamp(max=self.length - 1)
        return self.forecasts.gather(2, t.view(-1, 1, 1).expand(-1, self.num_forecasters, 1)).squeeze(-1)

    def observe(self) -> torch.Tensor:
        current = self._current_forecasts()
        spread = (current - current.mean(-1, keepdim=True)) / self.sigma.unsqueeze(-1)
        columns = [
            self.error,
            torch.log(self.sq_fast + _EPS),
            torch.log(self.sq_slow + _EPS),
            self.weights,
            spread,
            self.ens_error.unsqueeze(-1),
            torch.log(self.ens_fast + _EPS).unsqueeze(-1),
            torch.log(self.ens_slow + _EPS).unsqueeze(-1),
            ((self.t - self.warmup).to(torch.float32) / self.horizon).unsqueeze(-1),
            self.share_log_weights.flatten(1),
        ]
        obs = torch.cat(columns, dim=-1)
        return torch.nan_to_num(obs, nan=0.0).clamp(-OBS_CLIP, OBS_CLIP)

    def actions_to_weights(self, actions: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Checked ``(B, K)`` actions mapped to simplex weights (see the Action Space docs)."""
        actions = checks.actions(actions, self.num_envs, self.single_action_space, self.device)  # clipped
        k = self.num_forecasters
        if self.action_mode == "logits":
            return torch.softmax(self.logit_scale * actions, dim=-1)
        if self.action_mode == "residual":  # a correction of the first share filter's log-weights
            return torch.softmax(self.share_log_weights[:, 0] + self.logit_scale * actions, dim=-1)
        mass = actions
        total = mass.sum(-1, keepdim=True)
        return torch.where(total > 1e-12, mass / total.clamp_min(1e-12), torch.full_like(mass, 1.0 / k))

    def step(self, actions: torch.Tensor | np.ndarray) -> StepResult:
        """Weight the pool's forecasts of each row's next value with ``actions: (B, K)``, then reveal it."""
        weights = self.actions_to_weights(actions)
        predictions = self._current_forecasts()
        now = self.t.clamp(max=self.length - 1).unsqueeze(-1)
        value = self.values.gather(1, now).squeeze(-1)
        sigma = self.sigma
        error = (predictions - value.unsqueeze(-1)) / sigma.unsqueeze(-1)
        ens_error = (weights * error).sum(-1)
        loss = ens_error.square()
        self.error = torch.nan_to_num(error, nan=OBS_CLIP, posinf=OBS_CLIP, neginf=-OBS_CLIP)
        sq = self.error.square()
        self.sq_fast = (1.0 - FAST_RATE) * self.sq_fast + FAST_RATE * sq
        self.sq_slow = (1.0 - SLOW_RATE) * self.sq_slow + SLOW_RATE * sq
        self.ens_error = torch.nan_to_num(ens_error, nan=OBS_CLIP, posinf=OBS_CLIP, neginf=-OBS_CLIP)
        ens_sq = self.ens_error.square()
        self.ens_fast = (1.0 - FAST_RATE) * self.ens_fast + FAST_RATE * ens_sq
        self.ens_slow = (1.0 - SLOW_RATE) * self.ens_slow + SLOW_RATE * ens_sq
        self.weights = weights
        if self.share_filters:  # on the observed (clipped) errors, as a controller reading them would
            observed = self.error.clamp(-OBS_CLIP, OBS_CLIP).square()
            self.share_log_weights = torch.stack(
                [
                    share_filter_update(self.share_log_weights[:, j], observed, eta, alpha)
                    for j, (eta, alpha) in enumerate(self.share_filters)
                ],
                dim=1,
            )
        regime = self.regime.gather(1, now).squeeze(-1)
        decision = self.t - self.warmup
        self.t = self.t + 1
        loss = torch.nan_to_num(loss, nan=1e30, posinf=1e30)
        reward = -loss.clamp(max=self.loss_clip)
        truncated = self.t >= self.length
        info = {
            "loss": loss.clone(),
            "best_forecaster_loss": sq.min(-1).values,
            "weights": weights.clone(),
            "regime": regime,
            "decision": decision,
            "family": self.stream_family_index.clone(),
        }
        return StepResult(self.observe(), reward.to(torch.float32), torch.zeros_like(truncated), truncated, info)
