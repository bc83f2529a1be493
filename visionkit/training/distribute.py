"""Data-parallel training on TensorFlow's tf.distribute strategies.

`mirrored`: MirroredStrategy over every local GPU (or, with `cpu_devices=N` on a machine without
GPUs, over N logical CPU devices — how the strategy is tested without GPUs). The loader's batch is
the global batch: the strategy splits it across the replicas and Keras aggregates the metrics over
all of them.

`multi_worker`: MultiWorkerMirroredStrategy over the workers that TF_CONFIG lists, one process per
machine. Every worker builds the same loader (same seed: same order, same augmentation) and reads,
decodes and augments only its replicas' rows of each global batch (rows r::R for replica r of R):
augmentation is seeded per sample position, so those rows are exactly the ones a single process
would train on, and gradients are summed over all replicas of all workers. Worker 0 is the chief:
it alone tracks, evaluates and exports; the others train and stop. Keras 3.15's fit needs two
repairs under this strategy (keras-team/keras#20585): see patch_keras_for_multi_worker and
build_before_fit.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os

import keras

from visionkit.errors import UserError

STRATEGIES = ("none", "mirrored", "multi_worker")


def configure_cpu_devices(count: int) -> None:
    """Split the CPU into `count` logical devices; must run before TensorFlow starts its runtime."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as error:  # the runtime already started: too late to split
        raise UserError(f"trainer.cpu_devices={count}: {error}") from None


def make_strategy(name: str, *, cpu_devices: int = 0):
    """The tf.distribute strategy for `trainer.strategy`, or None for plain single-device training."""
    if name not in STRATEGIES:
        raise UserError(f"trainer.strategy must be one of {', '.join(STRATEGIES)}, received {name!r}")
    if name == "none":
        return None
    if keras.backend.backend() != "tensorflow":
        raise UserError(
            f"trainer.strategy={name} needs the TensorFlow backend (KERAS_BACKEND=tensorflow), "
            f"not {keras.backend.backend()}"
        )
    import tensorflow as tf

    if name == "multi_worker":
        this_worker()  # a clear error before TensorFlow tries to connect
        patch_keras_for_multi_worker()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if cpu_devices > 1 and not tf.config.list_physical_devices("GPU"):
        configure_cpu_devices(cpu_devices)
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    return tf.distribute.MirroredStrategy()


def strategy_scope(strategy):
    """Where variables must be created (model, optimizer, metrics) for `strategy`."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


# ---- multi_worker -------------------------------------------------------------------------------


def worker_of(tf_config: str | None) -> tuple[int, int]:
    """(this worker's index, number of workers) from the TF_CONFIG environment variable."""
    example = (
        'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}\''
    )
    try:
        config = json.loads(tf_config or "")
        workers, task = config["cluster"]["worker"], config["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError):
        raise UserError(
            f"trainer.strategy=multi_worker needs TF_CONFIG naming the workers and this one, e.g. "
            f"{example}; received {tf_config!r}"
        ) from None
    if task.get("type") != "worker" or not 0 <= index < len(workers):
        raise UserError(f"TF_CONFIG: task must be a worker with an index below {len(workers)}, received {task!r}")
    return index, len(workers)


def this_worker() -> tuple[int, int]:
    """(this process's worker index, number of workers), from this process's TF_CONFIG."""
    return worker_of(os.environ.get("TF_CONFIG"))


def is_multi_worker(strategy) -> bool:
    if strategy is None:
        return False
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy) -> bool:
    """Whether this process tracks, evaluates and exports: always, except for workers 1..N-1."""
    return not is_multi_worker(strategy) or this_worker()[0] == 0


def worker_steps(batch_sizes: list[int], workers: int) -> int:
    """Batches every worker takes: all of them, unless the last is too small to give each worker a row
    (an empty replica batch); then all but the last, on every worker alike."""
    return len(batch_sizes) - (1 if batch_sizes and batch_sizes[-1] < workers else 0)


def multi_worker_dataset(loader, strategy):
    """The distributed dataset fit reads: each replica's rows of each of `loader`'s global batches.
    Replica r of R takes rows r::R, and only they are read from disk and augmented; a worker's input
    pipeline yields its local replicas' rows in turn (distribute_datasets_from_function hands each
    element to one replica, unlike experimental_distribute_dataset, which would split every element
    again)."""
    import tensorflow as tf

    def dataset_for(context: tf.distribute.InputContext):
        local = context.num_replicas_in_sync // context.num_input_pipelines
        replicas = range(context.input_pipeline_id * local, (context.input_pipeline_id + 1) * local)
        replica_count = context.num_replicas_in_sync
        sizes = [min(loader.batch_size, len(loader.split) - i * loader.batch_size) for i in range(len(loader))]
        steps = worker_steps(sizes, replica_count)

        # The loader's epochs as a single process's fit numbers them: fit ends an epoch of a PyDataset
        # before its first one (EpochIterator.reset calls on_epoch_end), so training starts at the
        # loader's epoch + 1 (a resumed run's too).
        epochs = itertools.count(loader.epoch + 1)

        def batches():  # called anew for each epoch's iterator
            # Set here rather than after the last batch: fit stops reading at the cardinality, before
            # a generator's code after its last yield would run.
            loader.start_at_epoch(next(epochs))
            for i in range(steps):
                for replica in replicas:
                    yield loader.batch(i, rows=range(replica, sizes[i], replica_count))

        signature = keras.tree.map_structure(
            lambda array: tf.TensorSpec((None, *array.shape[1:]), tf.as_dtype(array.dtype)),
            loader.batch(0, rows=[0]),
        )
        dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
        return dataset.apply(tf.data.experimental.assert_cardinality(steps * local)).prefetch(2)

    return strategy.distribute_datasets_from_function(dataset_for)


def patch_keras_for_multi_worker() -> None:
    """Keras 3.15 reduces each replica's scalar metrics with strategy.reduce("MEAN", v, axis=0) under
    MultiWorkerMirroredStrategy, which fails ("Invalid reduction dimension 0 for input with 0
    dimensions"); reduce them over the replicas alone (axis=None), as for one machine."""
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer.reduce_per_replica, "reduces_scalars", False):
        return
    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            import tensorflow as tf

            return keras.tree.map_structure(
                lambda v: (
                    strategy.reduce("MEAN", v, axis=None) if isinstance(v, tf.distribute.DistributedValues) else v
                ),
                values,
            )
        return original(values, strategy, reduction)

    reduce_per_replica.reduces_scalars = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def build_before_fit(model: keras.Model, strategy, batch) -> None:
    """Build the model's, loss's and metrics' variables from one local batch under the strategy. Keras
    3.15's fit builds them from a batch it first reduces across the workers, which fails under
    MultiWorkerMirroredStrategy ("Attempt to convert a value (PerReplica...)"); built here, that step
    has nothing left to do and is skipped."""
    with strategy.scope():
        model._symbolic_build(data_batch=batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
