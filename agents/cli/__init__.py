"""The command-line tools ``metaopt-train`` and ``metaopt-bench``: thin; nothing imports from them."""
