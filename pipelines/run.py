"""The command line: python -m pipelines.run [mode=...] task=... model=... k=v ... (modes: pipelines/modes.py; --help)

Config-group choices and the mode are checked before Hydra composes the config, so a typo gets one
line naming the closest option instead of a stack trace. Errors the user can fix print one line on
stderr and exit with status 2 (HYDRA_FULL_ERROR=1 shows the traceback instead).
"""

from __future__ import annotations

import importlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from pipelines.context import PROJECT_ROOT, apply_profile  # noqa: E402
from pipelines.modes import MODES, modes_help  # noqa: E402
from visionkit.errors import ExportVerificationError, TrainingDivergedError, UserError  # noqa: E402
from visionkit.registry import unknown_name_message  # noqa: E402

CONF_DIR = PROJECT_ROOT / "conf"

OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
OmegaConf.register_new_resolver("modes_help", modes_help, replace=True)  # --help's list of modes


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_overrides(arguments: list[str]) -> None:
    """Reject unknown config-group options and modes before Hydra runs (sweeps `a,b` included)."""
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    for argument in arguments:
        if argument.startswith("-") or "=" not in argument:
            continue
        key, value = argument.lstrip("+~").split("=", 1)
        choices = MODES if key == "mode" else group_options(key) if key in groups else None
        if choices is None:
            continue
        for option in value.split(","):
            if option not in choices:
                kind = "mode" if key == "mode" else f"{key} option"
                raise UserError(unknown_name_message(kind, option, choices))


def dispatch(cfg: DictConfig):
    # Each mode is the module of the same name, imported alone: mode=summary stays quick without the
    # data, training and tracking imports of the other modes.
    if cfg.mode not in MODES:  # set in a config file rather than on the command line
        raise UserError(unknown_name_message("mode", cfg.mode, MODES))
    if cfg.mode != "summary":  # the architecture report shows the configured (paper) network
        apply_profile(cfg)
    return importlib.import_module(f"pipelines.{cfg.mode}").run(cfg)


def report(error: Exception, status: int) -> None:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise error
    print(f"error: {error}", file=sys.stderr)
    sys.exit(status)


def sweep_objective(cfg: DictConfig, result):
    """The value a sweeper optimises (`optimized_metric`, set by hparams_search configs), or None."""
    name = cfg.get("optimized_metric")
    if name is None:
        return None
    if not isinstance(result, dict) or name not in result:
        available = ", ".join(sorted(result)) if isinstance(result, dict) else "none"
        raise UserError(f"optimized_metric={name} is not a result of mode={cfg.mode}; available: {available}")
    return float(result[name])


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def app(cfg: DictConfig) -> float | None:
    try:
        return sweep_objective(cfg, dispatch(cfg))
    except UserError as error:
        report(error, 2)
    except (ExportVerificationError, TrainingDivergedError) as error:
        report(error, 1)


def print_models() -> None:
    """--help's list of models: the tasks each supports, and which have ImageNet weights."""
    # imports keras: only for --help, so that a typo's check stays quick
    from visionkit.models import MODELS
    from visionkit.models.transfer import imagenet_models

    width = max(map(len, MODELS.names()))
    print(
        "== Models ==\nmodel=<name>, the tasks it supports, and imagenet where model.weights=imagenet "
        "starts from keras.applications' ImageNet weights\n"
    )
    with_weights = set(imagenet_models())
    for name in MODELS.names():
        tasks = ", ".join(MODELS.meta(name)["tasks"])
        print(f"  {name:<{width}}  {tasks}{'  imagenet' if name in with_weights else ''}")
    print()


def main() -> None:
    try:
        check_overrides(sys.argv[1:])
    except UserError as error:
        report(error, 2)
    if {"--help", "-h"} & set(sys.argv[1:]):
        print_models()
    app()


if __name__ == "__main__":
    main()
