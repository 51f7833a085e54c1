"""MetaOpt-Ensemble-v0: ensemble weighting. :mod:`.env` (documentation), :mod:`.core` (the batched core),
:mod:`.forecasters` (the batched forecaster bank), :mod:`.families` (the stream families)."""
