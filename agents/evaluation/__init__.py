"""The one evaluation path: rollout loop, per-family suites, statistics and reports."""
