"""trainer.cpu_threads: TensorFlow's thread pools, set before its runtime starts, or a notice why not."""

import subprocess
import sys

import pytest

from visionkit.errors import UserError
from visionkit.training.devices import set_cpu_threads

SET_IN_A_FRESH_PROCESS = """
import tensorflow as tf
from visionkit.training.devices import set_cpu_threads
assert set_cpu_threads(1) is None
tf.constant(1.0) + 1.0  # starts the runtime with them
threads = tf.config.threading
print(threads.get_intra_op_parallelism_threads(), threads.get_inter_op_parallelism_threads())
"""


def test_threads_are_set_before_tensorflow_starts():
    done = subprocess.run([sys.executable, "-c", SET_IN_A_FRESH_PROCESS], capture_output=True, text=True, check=True)
    assert done.stdout.split()[-2:] == ["1", "1"]


def test_once_tensorflow_runs_the_setting_is_reported_not_applied():
    import tensorflow as tf

    tf.constant(1.0) + 1.0
    current = tf.config.threading.get_intra_op_parallelism_threads()
    wanted = 3 if current != 3 else 2
    assert set_cpu_threads(wanted) == (
        f"trainer.cpu_threads={wanted} not applied: TensorFlow already started in this process"
    )
    assert tf.config.threading.get_intra_op_parallelism_threads() == current
    assert set_cpu_threads(0) is None  # the default: nothing to do


def test_a_negative_thread_count_is_an_error():
    with pytest.raises(UserError, match=r"trainer.cpu_threads must be at least 0, received -1"):
        set_cpu_threads(-1)
