"""Environment families: one batched core each, documented on its Env class."""
