"""metaopt-envs: Gymnasium environments for meta-optimization on batched torch cores."""
