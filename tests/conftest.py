import os

# XLA on CPU (JAX, and TensorFlow's jit-compiled steps): its backend optimizations
# cost more compile time than the tests' tiny models gain from them (the JAX model
# tests take 40 % less time without), and so do its fusion emitters (26 % less
# again on a cold compilation cache, as CI's is). Set before Keras starts a
# backend; the examples run as subprocesses inherit them. What is computed is the same.
_FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
_user_flags = os.environ.get("XLA_FLAGS", "")  # a flag the user set wins
os.environ["XLA_FLAGS"] = " ".join([_user_flags, *(
    flag for flag in _FAST_COMPILE_FLAGS if flag.split("=")[0] not in _user_flags)]).strip()

# JAX's persistent compilation cache, shared by the tests, their xdist workers
# and the examples they run as subprocesses: the same tiny models compile for
# the same shapes again and again (a killed and resumed run compiles its
# programs twice). A clean checkout starts it empty.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), os.pardir, ".pytest_cache", "jax_compilation"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import keras  # noqa: E402
import pytest


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend: {keras.backend.backend()}"


@pytest.fixture(autouse=True)
def _seed_and_policy():
    """Each test starts from the same seed and the default float32 policy."""
    keras.utils.set_random_seed(1234)
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)


# Tests of process mechanics: a SIGKILL then the same command resumed, KerasTuner's
# chief and workers over loopback. What they check lives in files and processes,
# not in a backend's arithmetic (each backend's training, saving and in-process
# resume are tested elsewhere), and each starts three or four Python processes.
# They run on one backend: the one that starts fastest.
PROCESS_MECHANICS_BACKEND = "torch"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"process_mechanics: runs on the {PROCESS_MECHANICS_BACKEND} backend only")


def pytest_collection_modifyitems(config, items):
    if keras.backend.backend() == PROCESS_MECHANICS_BACKEND:
        return
    skip = pytest.mark.skip(reason=f"process mechanics: tested once, on the "
                                   f"{PROCESS_MECHANICS_BACKEND} backend")
    for item in items:
        if item.get_closest_marker("process_mechanics"):
            item.add_marker(skip)


# Test modules whose module fixtures train a model (the example's demo run, the
# deployment tests' model). pytest-xdist's default schedule (`-n 2`) spreads a
# module's tests over both workers, and each builds the fixture: TensorFlow's
# demo run, 200 s, twice. These modules go to one worker each, whole; every
# other test is still handed out one at a time.
MODULES_WITH_TRAINED_FIXTURES = ("test_example_iemocap.py", "test_deploy.py")


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: absent without it
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "load":
        return None  # the user chose a schedule
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerPerTrainedFixture(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            path = nodeid.split("::", 1)[0]
            return path if os.path.basename(path) in MODULES_WITH_TRAINED_FIXTURES else nodeid

    return OneWorkerPerTrainedFixture(config, log)


@pytest.fixture
def backend():
    return keras.backend.backend()


# Keep the logs readable on the TensorFlow backend.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
