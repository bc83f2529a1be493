"""Step checkpoints and resuming inside an epoch: the consistent (step file, state.json) pair, the view of the
rest of an epoch, and a run interrupted mid-epoch that resumes to the uninterrupted run's weights and batches."""

import hashlib

import keras
import numpy as np
import pytest

from visionkit.data.augment import build_augmenter
from visionkit.data.core import Split
from visionkit.data.loader import BatchLoader
from visionkit.errors import UserError
from visionkit.training import checkpoints
from visionkit.training.checkpoints import (
    LAST,
    TrainingState,
    checkpoint_to_resume,
    read_state,
    restore_training,
    step_file_name,
)
from visionkit.training.mid_epoch import RemainingBatches, check_step_checkpoints, fit_from

NOISE = [{"name": "GaussNoise", "std_range": [0.1, 0.3], "p": 0.7}, {"name": "HorizontalFlip", "p": 0.5}]
STEPS_PER_EPOCH = 10  # 40 samples in batches of 4
EPOCHS = 3


class Crash(Exception):
    """What a kill -9 at a batch is to the training loop."""


def labels(samples):
    return np.array([s["label"] for s in samples])


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    return Split(rng.integers(0, 255, (40, 8, 8, 1), dtype=np.uint8), {"label": np.arange(40) % 3})


class RecordingLoader(BatchLoader):
    """A training loader that records (epoch, batch index, digest of the images) of every batch it gives while
    a fit trains (not the batches Keras reads ahead of training to learn their shapes)."""

    def __init__(self, split):
        super().__init__(split, labels, batch_size=4, augmenter=build_augmenter(NOISE, seed=3), shuffle=True, seed=1)
        self.trained: list[tuple[int, int, str]] = []
        self.recording = False

    def __getitem__(self, index):
        images, targets = super().__getitem__(index)
        if self.recording:
            self.trained.append((self.epoch, index, hashlib.sha1(images.tobytes()).hexdigest()[:12]))
        return images, targets


class Record(keras.callbacks.Callback):
    def __init__(self, loader):
        super().__init__()
        self.loader = loader

    def on_train_begin(self, logs=None):
        self.loader.recording = True

    def on_train_end(self, logs=None):
        self.loader.recording = False


class CrashAt(keras.callbacks.Callback):
    def __init__(self, epoch, step):
        super().__init__()
        self.at, self.epoch = (epoch, step), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch + 1) == self.at:
            raise Crash


def compiled_model(weights=None) -> keras.Model:
    """A small classifier whose Adam learning rate decays with optimizer.iterations, as the configured ones do."""
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Conv2D(4, 3, activation="relu")(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(hidden)))
    if weights is not None:
        model.set_weights(weights)
    schedule = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=EPOCHS * STEPS_PER_EPOCH)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy", jit_compile=False)
    return model


def train(split, directory, weights, *callbacks, state=None, epochs=EPOCHS):
    """fit_from the beginning, or from `state` as resume=true does; (model, loader)."""
    model, loader = compiled_model(weights), RecordingLoader(split)
    val = BatchLoader(split.take(range(8)), labels, batch_size=4)
    position = None
    if state:
        restore_training(model, directory, state)
        loader.start_at_epoch(state["epochs_completed"])
        position = state.get("position")
    checkpointing = TrainingState(directory, "val_loss", "min", best=(state or {}).get("best"), every_steps=4)
    fit_from(
        model,
        loader,
        val,
        epochs=epochs,
        callbacks=[checkpointing, Record(loader), *callbacks],
        initial_epoch=(state or {}).get("epochs_completed", 0),
        position=position,
    )
    return model, loader


def test_a_run_interrupted_mid_epoch_resumes_to_the_same_weights_and_batches(split, tmp_path):
    keras.utils.set_random_seed(0)
    weights = compiled_model().get_weights()
    uninterrupted, whole = train(split, tmp_path / "whole", weights)

    with pytest.raises(Crash):  # after the step checkpoint at step 4 of epoch 2 (0-based 1), before step 8's
        train(split, tmp_path / "cut", weights, CrashAt(epoch=1, step=6))
    state = read_state(tmp_path / "cut")
    assert state["position"] == {"epoch": 1, "step": 4, "file": step_file_name(1, 4)}
    assert state["epochs_completed"] == 1

    resumed, rest = train(split, tmp_path / "cut", compiled_model().get_weights(), state=state)
    for mine, reference in zip(resumed.get_weights(), uninterrupted.get_weights()):
        np.testing.assert_allclose(mine, reference, rtol=1e-6, atol=1e-7)
    assert int(resumed.optimizer.iterations) == EPOCHS * STEPS_PER_EPOCH
    assert len(rest.trained) == (EPOCHS - 1) * STEPS_PER_EPOCH - 4
    assert rest.trained == whole.trained[STEPS_PER_EPOCH + 4 :]  # the same batches, samples and augmentation
    assert len({digest for *_, digest in whole.trained}) == len(whole.trained)  # every batch differs from the others
    assert read_state(tmp_path / "cut")["epochs_completed"] == EPOCHS
    assert "position" not in read_state(tmp_path / "cut")


def test_the_step_checkpoint_restores_its_step(split, tmp_path):
    keras.utils.set_random_seed(0)
    with pytest.raises(Crash):
        train(split, tmp_path, None, CrashAt(epoch=0, step=9))
    state = read_state(tmp_path)
    assert state["position"]["step"] == 8 and checkpoint_to_resume(state) == step_file_name(0, 8)
    assert sorted(p.name for p in tmp_path.glob("*.keras")) == [step_file_name(0, 8)]  # step 4's file removed
    model = compiled_model()
    restore_training(model, tmp_path, state)
    assert int(model.optimizer.iterations) == 8
    assert checkpoint_to_resume({"epochs_completed": 2}) == LAST
    missing = rf"resume=true: {tmp_path / LAST}, the checkpoint state.json names, is missing"
    with pytest.raises(UserError, match=missing):
        restore_training(model, tmp_path, {"epochs_completed": 2})


def test_a_resume_with_fewer_epochs_than_the_position_trains_nothing(split, tmp_path):
    keras.utils.set_random_seed(0)
    with pytest.raises(Crash):
        train(split, tmp_path, None, CrashAt(epoch=1, step=5))
    state = read_state(tmp_path)
    resumed, loader = train(split, tmp_path, None, state=state, epochs=1)
    assert int(resumed.optimizer.iterations) == STEPS_PER_EPOCH + 4 and loader.trained == []


def model_and_state(tmp_path, steps):
    """A fitted tiny model and its TrainingState after `steps` batches of epoch 0, saved at every step."""
    model = compiled_model()
    state = TrainingState(tmp_path, "val_loss", "min", every_steps=1, extra_state={"run_id": "r"})
    state.set_model(model)
    state.set_params({"steps": STEPS_PER_EPOCH})
    state.on_epoch_begin(0)
    for batch in range(steps):
        state.on_train_batch_end(batch, {"loss": 1.0})
    return model, state


def test_a_crash_between_the_step_file_and_state_json_leaves_a_consistent_pair(tmp_path, monkeypatch):
    model, state = model_and_state(tmp_path, steps=2)
    assert read_state(tmp_path) == {
        "run_id": "r",
        "epochs_completed": 0,
        "position": {"epoch": 0, "step": 2, "file": step_file_name(0, 2)},
        "monitor": "val_loss",
        "mode": "min",
        "best": None,
    }
    model.layers[-1].kernel.assign(np.zeros_like(model.layers[-1].kernel.numpy()))

    def killed(*_):
        raise Crash

    monkeypatch.setattr(checkpoints, "write_state", killed)
    with pytest.raises(Crash):  # step 3's model file is written, state.json is not
        state.on_train_batch_end(2, {"loss": 1.0})
    assert (tmp_path / step_file_name(0, 3)).is_file()
    kept = read_state(tmp_path)
    assert kept["position"]["step"] == 2  # still names step 2's file, which is still there and complete
    saved = keras.saving.load_model(tmp_path / checkpoint_to_resume(kept), compile=False)
    assert np.abs(saved.layers[-1].kernel.numpy()).sum() > 0  # step 2's weights, not the zeroed ones of step 3
    monkeypatch.undo()

    state.on_train_batch_end(3, {"loss": 1.0})  # the next step checkpoint removes the orphan
    assert sorted(p.name for p in tmp_path.glob("*.keras")) == [step_file_name(0, 4)]


def test_no_step_checkpoint_after_an_epochs_last_batch_or_a_non_finite_loss(tmp_path):
    model_and_state(tmp_path / "whole", steps=STEPS_PER_EPOCH)
    assert read_state(tmp_path / "whole")["position"]["step"] == STEPS_PER_EPOCH - 1  # the epoch's end saves the last
    _, state = model_and_state(tmp_path / "nan", steps=5)
    state.on_train_batch_end(5, {"loss": float("nan")})
    assert state.diverged[:2] == (1, 6) and np.isnan(state.diverged[2])
    assert read_state(tmp_path / "nan")["position"]["step"] == 5


def test_an_epochs_end_replaces_the_step_checkpoint(tmp_path):
    model, state = model_and_state(tmp_path, steps=3)
    (tmp_path / f".{step_file_name(0, 4)[:-6]}.tmp.keras").write_bytes(b"half")  # left by a kill -9
    state.on_epoch_end(0, {"val_loss": 0.5})
    assert read_state(tmp_path) == {
        "run_id": "r",
        "epochs_completed": 1,
        "monitor": "val_loss",
        "mode": "min",
        "best": 0.5,
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.keras", "last.keras", "state.json"]


def test_remaining_batches_are_the_loaders_batches_from_a_step(split):
    loader = BatchLoader(split, labels, batch_size=4, augmenter=build_augmenter(NOISE, seed=3), shuffle=True)
    loader.start_at_epoch(2)
    view = RemainingBatches(loader, 7)
    assert len(view) == 3 and view.workers == loader.workers
    for index in range(3):
        for mine, reference in zip(view[index], loader[7 + index]):
            np.testing.assert_array_equal(mine, reference)
    view.on_epoch_end()
    assert loader.epoch == 3
    for first in (-1, STEPS_PER_EPOCH):
        with pytest.raises(ValueError, match=f"first must be a batch of the epoch's 10, received {first}"):
            RemainingBatches(loader, first)


def test_step_checkpoints_are_refused_under_multi_worker_and_when_negative():
    check_step_checkpoints(0, "multi_worker")
    check_step_checkpoints(5, "mirrored")
    with pytest.raises(UserError, match="not supported with trainer.strategy=multi_worker"):
        check_step_checkpoints(5, "multi_worker")
    with pytest.raises(UserError, match="must be 0 .off. or a number of steps, received -1"):
        check_step_checkpoints(-1, "none")
