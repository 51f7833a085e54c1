"""MetaOpt-HPO-v0: sequential hyperparameter search. :mod:`.env` (documentation), :mod:`.core` (the batched
core), :mod:`.families` (the objective families)."""
