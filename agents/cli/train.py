"""``metaopt-train``: train an RL² (or PPO) agent on a batched MetaOpt env from Hydra configs.

    metaopt-train                                  # configs/train.yaml: RL² on quadratics, demo budget
    metaopt-train env=lr_mixture budget=reference  # compose other config groups
    metaopt-train agent.hyperparameters.n_epochs=8 seed=3
    metaopt-train --multirun seed=0,1,2            # a sweep (Hydra's launchers send it to a cluster)

Checkpoints go to ``<out_dir>/checkpoints`` every ``budget.checkpoint_every``
steps; running the same command again resumes from the latest one (a killed
run continues where it stopped). TensorBoard logs go to ``<out_dir>/tb``;
``wandb.mode=offline`` adds wandb's SB3 integration without any network call.
With ``evaluate=true`` the trained agent is compared with the hand-designed
baselines (tuned on the training split) on held-out test tasks.

The training itself is :func:`agents.rl2.training.train` (import it from there, not from here).
"""

from __future__ import annotations

from omegaconf import DictConfig

from agents.rl2.training import CONFIG_DIR, train


def cli() -> None:
    """Console entry point (``metaopt-train``), Hydra-driven."""
    import hydra

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
    def _main(cfg: DictConfig) -> None:
        result = train(cfg)
        print(f"model: {result['model']} ({result['num_timesteps']} steps)", flush=True)

    _main()


if __name__ == "__main__":
    cli()
