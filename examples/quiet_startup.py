"""Import Keras and its backend with their start-up noise filtered out.

TensorFlow and absl write lines such as "oneDNN custom operations are on",
"Could not find cuda drivers on your machine", the CPU-instruction notice, and
on every CPU-only machine an `E0000 ... failed call to cuInit` line that reads
as a failure, straight to file descriptor 2, before any Python logging setting
or `TF_CPP_MIN_LOG_LEVEL` can act. The examples import Keras through
`import_keras()`: while the backend starts, descriptor 2 goes to a temporary
file; afterwards every line that is not one of these known notices is written
back to stderr, so real warnings and errors still show. `filtered_stderr()`
does the same around LiteRT conversion, whose converter logs its progress.
"""

import contextlib
import os
import re
import sys
import tempfile

NOISE = [re.compile(pattern) for pattern in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called",
    r"^[IW]\d{4} [\d:. ]+\d+ (port|cudart_stub|cpu_feature_guard|cuda_executor|gpu_device)\.cc:\d+\]",
    r"^To enable the following instructions: .* rebuild TensorFlow",
    r"^E\d{4} [\d:. ]+\d+ cuda_platform\.cc:\d+\] failed call to cuInit",
    r"^E\d{4} [\d:. ]+\d+ cuda_(dnn|fft|blas)\.cc:\d+\] Unable to register",
    r"^An NVIDIA GPU may be present on this machine, but a CUDA-enabled jaxlib",
    # The LiteRT converter's progress notes while it reads a SavedModel, and
    # one benign notice about an attribute newer than its op registry.
    r"^[IW]\d{4} [\d:. ]+\d+ (tf_tfl_flatbuffer_helpers|reader|loader|"
    r"mlir_graph_optimization_pass|dump_mlir_util|generator_dataset_op)\.cc:\d+\]",
    r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.",
    r"^E\d{4} [\d:. ]+\d+ node_def_util\.cc:\d+\] NodeDef mentions attribute Truncate "
    r"which is not in the op definition",
)]


def is_noise(line):
    return any(pattern.search(line) for pattern in NOISE)


@contextlib.contextmanager
def filtered_stderr():
    """Capture descriptor 2; on exit write back the lines that are not noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(True)
                    if not is_noise(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def import_keras():
    """`import keras` (and start TensorFlow's devices, where the cuInit line
    comes from) quietly; returns the keras module."""
    with filtered_stderr():
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.list_physical_devices()
    return keras
