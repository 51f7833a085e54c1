"""MetaOpt-LR-v0: learning-rate control. :mod:`.env` (documentation), :mod:`.core` (the batched core),
:mod:`.optimizers` (the inner optimizers), :mod:`.families` (the task families)."""
