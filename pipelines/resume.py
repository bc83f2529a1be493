"""When a run may continue: a new run keeps its configuration in its run directory, and `resume=true` continues
only the same experiment, compared key by key with that saved configuration."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from visionkit.errors import UserError
from visionkit.tracking import flatten
from visionkit.training.checkpoints import read_state

# A resumed run must be the same experiment: these sections must match the saved configuration,
# except for how long it trains, how its data is loaded and on how many CPU threads.
EXPERIMENT_SECTIONS = ("task.", "model.", "data.", "augment.", "trainer.", "profile")
RESUMABLE_KEYS = (
    "trainer.epochs",
    "trainer.workers",
    "trainer.multiprocessing",
    "trainer.prefetch",
    "trainer.cpu_threads",
    "trainer.checkpoint_every_steps",
)
RUN_CONFIG = "config.yaml"


def training_state(cfg: DictConfig, checkpoints: Path) -> dict:
    """The saved state to continue from with resume=true, else {} for a new run."""
    return resume_state(cfg, checkpoints) if cfg.get("resume") else start_state(cfg, checkpoints)


def start_state(cfg: DictConfig, checkpoints: Path) -> dict:
    """A new run: refuse a run directory that already holds one, and keep the configuration to resume with."""
    if read_state(checkpoints) is not None:
        raise UserError(
            f"{checkpoints.parent} already holds a run; resume=true continues it, or choose another hydra.run.dir"
        )
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / RUN_CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return {}


def resume_state(cfg: DictConfig, checkpoints: Path) -> dict:
    """The saved state of the run in this directory, after checking the configuration is the same."""
    state = read_state(checkpoints)
    if state is None:
        raise UserError(
            f"resume=true: no checkpoint to resume in {checkpoints.parent} (pass hydra.run.dir=<the run directory>)"
        )
    saved = flatten(OmegaConf.to_container(OmegaConf.load(checkpoints / RUN_CONFIG), resolve=True))
    current = flatten(OmegaConf.to_container(cfg, resolve=True))
    changed = sorted(
        key
        for key in saved.keys() | current.keys()
        if key.startswith(EXPERIMENT_SECTIONS) and key not in RESUMABLE_KEYS and saved.get(key) != current.get(key)
    )
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed[:5])
        raise UserError(
            f"resume=true with a different configuration ({details}); of the experiment's settings "
            f"only {', '.join(RESUMABLE_KEYS)} may change"
        )
    return state
