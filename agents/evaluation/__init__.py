"""The one evaluation path of every environment family.

- :mod:`.rollout`: the one loop (an agent runs one trial on every row of a batched core);
- :mod:`.suites`: :class:`~.suites.Suite` and :func:`~.suites.get_suite`, one suite per env id
  (:mod:`.lr`, :mod:`.ensemble`, :mod:`.hpo` hold each family's records, summaries, tables, plots);
- :mod:`.specs`: the one parser of agent specs (``model.zip``, ``baseline:NAME?k=v``, ``module:Class``);
- :mod:`.metrics`: the test-seed offset, win rate, divergence rate, gap closed;
- :mod:`.stats`: IQM and bootstrap confidence intervals (SciPy);
- :mod:`.report`: what ``metaopt-bench`` and ``metaopt-train`` write.
"""
