"""Compute profiles: profile=auto picks cpu without a GPU and full with one; a profile changes only
the keys the user did not set on the command line."""

import pytest
from hydra import compose, initialize_config_dir

from pipelines import context
from pipelines.run import CONF_DIR
from visionkit.errors import UserError


def composed(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture
def machine(monkeypatch):
    """Pretend to run on a machine with the given accelerators and command-line keys."""
    import visionkit.training.devices as devices

    def set_up(accelerators=(), command_line=()):
        monkeypatch.setattr(devices, "accelerators", lambda: list(accelerators))
        monkeypatch.setattr(context, "command_line_keys", lambda: set(command_line))

    return set_up


def test_auto_without_a_gpu_applies_the_cpu_profile(machine, capsys):
    machine()
    cfg = composed("task=segmentation", "model=unet")
    assert context.apply_profile(cfg) == "cpu"
    assert cfg.profile == "cpu" and cfg.model.width == 0.125
    assert (
        "profile cpu (no GPU found): model.width=0.125 trainer.epochs=12 trainer.batch_size=32; profile=full"
        in capsys.readouterr().out
    )


def test_auto_with_a_gpu_keeps_the_paper_size(machine, capsys):
    machine(accelerators=["/physical_device:GPU:0"])
    cfg = composed("task=segmentation", "model=unet")
    assert context.apply_profile(cfg) == "full"
    assert cfg.model.width == 1.0 and capsys.readouterr().out == ""


def test_command_line_values_win_over_the_profile(machine):
    machine(command_line=["model.width"])
    cfg = composed("task=segmentation", "model=unet", "model.width=0.5")
    assert context.apply_profile(cfg) == "cpu" and cfg.model.width == 0.5


def test_profile_full_forces_the_paper_size_on_a_cpu(machine):
    machine()
    cfg = composed("task=segmentation", "model=unet", "profile=full")
    assert context.apply_profile(cfg) == "full" and cfg.model.width == 1.0


def test_a_profile_naming_a_missing_key_or_an_unknown_profile_is_an_error(machine):
    machine()
    cfg = composed("task=segmentation", "model=unet", "+profiles.cpu.trainer.epoch=3")
    with pytest.raises(UserError, match=r"profiles.cpu.trainer.epoch: not a config key"):
        context.apply_profile(cfg)
    with pytest.raises(UserError, match=r"profile must be one of auto, cpu, full, received 'gpu'"):
        context.apply_profile(composed("profile=gpu"))


def test_lenet5_on_digits_runs_tensorflow_on_one_thread_without_a_gpu(machine):
    machine()
    default = composed()
    context.apply_profile(default)
    assert default.trainer.cpu_threads == 1
    other_model = composed("model=alexnet")
    context.apply_profile(other_model)
    assert other_model.trainer.cpu_threads == 0  # one per core
    machine(accelerators=["/physical_device:GPU:0"])
    on_gpu = composed()
    context.apply_profile(on_gpu)
    assert on_gpu.trainer.cpu_threads == 0
