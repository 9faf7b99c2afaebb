"""Data-parallel training (keras_hrf.distribute) on 2 virtual CPU devices.

The devices must exist before the backend starts, so each check runs in a
fresh interpreter: XLA_FLAGS on JAX, logical CPU devices on TensorFlow.
"""

import importlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
distributed_backends_only = pytest.mark.skipif(
    BACKEND not in ("jax", "tensorflow"), reason="data-parallel training: JAX and TensorFlow")

# One SGD step of the same Conformer (HRF with BatchNorm, the Conformer's own
# masked BatchNorm; dropout off: replicas draw their own masks on TensorFlow)
# on one device and on two, at the same global batch of 8 utterances of
# different lengths; then evaluation and prediction of 7 utterances (a batch
# the replicas cannot share evenly) and the merge.
STEP = r"""
import contextlib, json, sys
import numpy as np
import keras
if keras.backend.backend() == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras_hrf
from keras_hrf import distribute, training
from keras_hrf.features import PaddedBatches
from keras_hrf.recipe import Recipe, compile_for_training

rng = np.random.default_rng(0)
xs = [rng.normal(size=(n, 16)).astype("float32") for n in (50, 70, 60, 80, 55, 65, 90, 40)]
ys = np.array([0, 1, 2, 0, 1, 2, 0, 1], "int32")
recipe = Recipe(epochs=1, spec_augment=False, optimizer="sgd", learning_rate=0.1,
                warmup_fraction=0.0)

def run(data_parallel):
    replicas = data_parallel.num_replicas if data_parallel else 1
    with data_parallel.scope() if data_parallel else contextlib.nullcontext():
        keras.utils.set_random_seed(0)
        model = training.build_model("conformer", 3, 16, recipe, num_layers=1, model_dim=16,
                                     num_heads=2, dropout=0.0, attention_dropout=0.0,
                                     hrf_expansion=2.0, hrf_norm="batch")
        compile_for_training(model, 3, recipe, steps_per_epoch=1, model_name="conformer")
    if data_parallel:
        with data_parallel.synchronized_batch_norm(model):
            model.fit(PaddedBatches(xs, ys, batch_size=8).for_keras(), epochs=1, verbose=0,
                      shuffle=False)
        assert not any(getattr(l, "synchronized", False) for l in model._flatten_layers())
    else:
        model.fit(PaddedBatches(xs, ys, batch_size=8).for_keras(), epochs=1, verbose=0,
                  shuffle=False)
    weights = [np.asarray(w) for w in model.weights]
    seven = PaddedBatches(xs[:7], ys[:7], batch_size=8, batch_multiple=replicas).for_keras()
    scores = model.evaluate(seven, verbose=0, return_dict=True)
    logits = model.predict(PaddedBatches(xs[:7], batch_size=8, batch_multiple=replicas)
                           .for_keras(), verbose=0)[:7]
    merged = keras_hrf.reparameterize(model)
    merged_logits = merged.predict(PaddedBatches(xs[:7], batch_size=8, batch_multiple=replicas)
                                   .for_keras(), verbose=0)[:7]
    return weights, scores, logits, merged_logits

data_parallel = distribute.DataParallel()
two = run(data_parallel)
data_parallel.close()
one = run(None)
print(json.dumps({
    "replicas": data_parallel.num_replicas,
    "weights": max(float(np.max(np.abs(a - b))) for a, b in zip(one[0], two[0])),
    "update": max(float(np.max(np.abs(a))) for a in one[0]),
    "scores": [one[1], two[1]],
    "logits": float(np.max(np.abs(one[2] - two[2]))),
    "merged": float(np.max(np.abs(two[2] - two[3]))),
}))
"""


def _two_device_env():
    # Added to conftest's XLA_FLAGS (its fast-compile setting), not in their place.
    flags = " ".join(filter(None, [os.environ.get("XLA_FLAGS"),
                                   "--xla_force_host_platform_device_count=2"]))
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="2", XLA_FLAGS=flags,
               PYTHONPATH=os.pathsep.join([ROOT, HERE, os.environ.get("PYTHONPATH", "")]))
    return env


@distributed_backends_only
def test_one_step_on_two_devices_equals_one_device_at_the_same_global_batch():
    done = subprocess.run([sys.executable, "-c", STEP], env=_two_device_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["weights"] < 1e-5, result
    assert result["logits"] < 1e-4 and result["merged"] < 1e-4, result
    one, two = result["scores"]
    # The repeated row that fills the 7-utterance batch for two replicas counts nowhere.
    assert two["accuracy"] == pytest.approx(one["accuracy"])
    assert two["ua"] == pytest.approx(one["ua"])
    # JAX averages the loss over the global batch. TensorFlow averages each
    # replica's weighted mean, so a batch topped up for the replicas (here 4
    # real rows on one, 3 on the other) reports a slightly different loss;
    # the metrics (UA selects the checkpoint) are exact on both.
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5 if BACKEND == "jax" else 0.05)


@pytest.mark.skipif(BACKEND in ("jax", "tensorflow"), reason="the refusal is for other backends")
def test_other_backends_are_refused_with_the_backends_that_can():
    from keras_hrf import distribute

    with pytest.raises(ValueError, match=r"runs on the jax and tensorflow backends.*this is torch"):
        distribute.DataParallel()


def test_padded_batches_fill_up_to_the_replicas_with_weightless_repeats():
    import numpy as np

    from keras_hrf.features import PaddedBatches

    features = [np.full((10 + i, 2), i, "float32") for i in range(5)]
    batches = PaddedBatches(features, np.arange(5), batch_size=4, batch_multiple=3)
    x, y, weight = batches[0]
    assert x.shape[0] == 6 and y.tolist() == [0, 1, 2, 3, 0, 1]
    assert weight.tolist() == [1, 1, 1, 1, 0, 0]
    x, y, weight = batches[1]
    assert y.tolist() == [4, 4, 4] and weight.tolist() == [1, 0, 0]
    (x,) = PaddedBatches(features, batch_size=4, batch_multiple=3)[1]
    assert x.shape[0] == 3
    with pytest.raises(ValueError, match="batch_multiple must be a positive integer"):
        PaddedBatches(features, batch_multiple=0)


def test_the_example_trains_merges_and_records_its_replicas(tmp_path):
    """`examples/iemocap.py --distribute`: JAX on 2 virtual devices (a fresh
    interpreter); TensorFlow on its one CPU in this one (the 2-replica
    arithmetic is the test above); other backends refuse before any work."""
    script = os.path.join(ROOT, "examples", "iemocap.py")
    output = tmp_path / "run"
    args = ["--distribute", "--model", "speechformer", "--hrf-expansion", "2", "--epochs", "1",
            "--output", str(output), "--deploy-formats", "none"]
    if BACKEND == "jax":
        done = subprocess.run([sys.executable, script, *args], env=_two_device_env(), cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        assert "Data-parallel training over 2 device(s); global batch 16" in done.stdout
        replicas = 2
    else:
        iemocap = _example("iemocap")
        if BACKEND != "tensorflow":
            with pytest.raises(SystemExit, match=r"--distribute: Data-parallel training runs on "
                                                 r"the jax and tensorflow backends"):
                iemocap.main(args)
            assert not output.exists()  # refused before any work
            return
        iemocap.main(args)
        replicas = 1
    metrics = json.loads((output / "metrics.json").read_text())
    fold = metrics["folds"][0]
    assert fold["replicas"] == replicas
    assert fold["hrf"]["ua"] == fold["merged"]["ua"]
    assert fold["merged"]["confusion_matrix"] and sum(map(sum, fold["merged"]["confusion_matrix"])) \
        == fold["test_rows"]  # every test utterance once, the fill-up repeats left out


def test_a_batch_that_does_not_divide_over_the_replicas_is_named():
    from keras_hrf import distribute

    data_parallel = object.__new__(distribute.DataParallel)  # as if 2 devices were visible
    data_parallel.num_replicas = 2
    data_parallel.check_batch_size(16)
    with pytest.raises(ValueError, match=r"batch_size=15 does not divide over 2 data-parallel "
                                         r"replicas; choose a multiple of 2"):
        data_parallel.check_batch_size(15)


def test_the_tuners_trials_are_built_for_the_replicas_and_other_backends_refused(tmp_path):
    """HRFHyperModel(data_parallel=...) builds each trial's model in the
    distribution's scope (TensorFlow: its variables live on the strategy's
    replicas); `tune_expansion.py --distribute` refuses other backends."""
    import keras_tuner

    from keras_hrf import distribute
    from keras_hrf import tuning

    if BACKEND not in ("jax", "tensorflow"):
        tune_expansion = _example("tune_expansion")
        with pytest.raises(SystemExit, match=r"--distribute: Data-parallel training runs on"):
            tune_expansion.main(["--distribute", "--output", str(tmp_path / "tune")])
        assert not (tmp_path / "tune").exists()
        return
    data_parallel = distribute.DataParallel()
    try:
        hypermodel = tuning.HRFHyperModel(3, 16, expansions=(2,), data_parallel=data_parallel,
                                          model_kwargs={"num_layers": 1, "model_dim": 16})
        model = hypermodel.build(keras_tuner.HyperParameters())
        if BACKEND == "tensorflow":
            assert model.distribute_strategy is data_parallel.strategy
            assert all(data_parallel.strategy.extended.variable_created_in_scope(v.value)
                       for v in model.weights)
        else:
            assert keras.distribution.distribution() is data_parallel.distribution
    finally:
        data_parallel.close()
    if BACKEND == "jax":
        assert keras.distribution.distribution() is None


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TF_CONFIG is TensorFlow's")
def test_several_tensorflow_workers_are_refused_with_the_upstream_reason(monkeypatch):
    from keras_hrf import distribute

    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]},
        "task": {"type": "worker", "index": 0}}))
    with pytest.raises(ValueError, match=r"MultiWorkerMirroredStrategy \(keras-team/keras#20585"):
        distribute.DataParallel()


@pytest.mark.skipif(BACKEND != "jax", reason="KERAS_DISTRIBUTION_* is JAX's")
def test_several_jax_processes_need_every_variable(monkeypatch):
    from keras_hrf import distribute

    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    monkeypatch.delenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", raising=False)
    monkeypatch.delenv("KERAS_DISTRIBUTION_PROCESS_ID", raising=False)
    with pytest.raises(ValueError, match=r"'KERAS_DISTRIBUTION_JOB_ADDRESSES', "
                                         r"'KERAS_DISTRIBUTION_PROCESS_ID'\] unset"):
        distribute.DataParallel()
    assert keras.distribution.distribution() is None


# Two JAX processes on loopback, one CPU device each, train the small Conformer
# (masked BatchNorm before the FFN: statistics over both processes' rows) on
# length-grouped batches, each process feeding its share; then evaluate and
# predict (a local copy) 7 utterances. One process on one device does the same
# at the same global batch.
PROCESSES = r"""
import contextlib, json, os, sys
import numpy as np
import keras
import keras_hrf
from keras_hrf import distribute, training
from keras_hrf.features import PaddedBatches
from keras_hrf.recipe import Recipe, compile_for_training

rng = np.random.default_rng(0)
xs = [rng.normal(size=(n, 16)).astype("float32") for n in rng.integers(40, 230, size=16)]
ys = (np.arange(16) % 3).astype("int32")
recipe = Recipe(epochs=2, spec_augment=False, optimizer="sgd", learning_rate=0.1,
                warmup_fraction=0.0)
several = int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES") or 1) > 1
data_parallel = distribute.DataParallel() if several else None
options = data_parallel.batch_options if several else (lambda part: {})
with data_parallel.scope() if several else contextlib.nullcontext():
    keras.utils.set_random_seed(0)
    model = training.build_model("conformer", 3, 16, recipe, num_layers=1, model_dim=16,
                                 num_heads=2, dropout=0.0, attention_dropout=0.0,
                                 hrf_expansion=2.0, hrf_norm="batch")
    compile_for_training(model, 3, recipe, steps_per_epoch=2, model_name="conformer")
train = PaddedBatches(xs, ys, batch_size=8, shuffle=True, length_window=2,
                      **options("train"))
model.fit(train.for_keras(), epochs=2, verbose=0, shuffle=False)
seven = PaddedBatches(xs[:7], ys[:7], batch_size=8, **options("test"))
scores = model.evaluate(seven.for_keras(), verbose=0, return_dict=True)
with data_parallel.for_prediction(model) if several else contextlib.nullcontext((model, 1)) \
        as (local, multiple):
    logits = local.predict(PaddedBatches(xs[:7], batch_size=8, batch_multiple=multiple)
                           .for_keras(), verbose=0)[:7]
    merged = keras_hrf.reparameterize(local)
    merged_logits = merged.predict(PaddedBatches(xs[:7], batch_size=8).for_keras(), verbose=0)

class Rows(keras.metrics.Metric):  # the rows of a global batch, as the model sees it
    def __init__(self):
        super().__init__(name="rows")
        self.total = self.add_variable((), initializer="zeros", name="total")
    def update_state(self, y_true, y_pred, sample_weight=None):
        self.total.assign_add(keras.ops.cast(keras.ops.shape(y_true)[0], "float32"))
    def result(self):
        return keras.ops.convert_to_tensor(self.total)

model.compile(loss=model.loss, metrics=[Rows()])
scores["rows"] = model.evaluate(seven.for_keras(), verbose=0, return_dict=True)["rows"]
np.savez(sys.argv[1], *[np.asarray(w) for w in local.weights], logits=logits,
         merged_logits=merged_logits)
print(json.dumps({"scores": scores,
                  "process": data_parallel.process_index if several else None,
                  "replicas": data_parallel.num_replicas if several else 1}))
"""


def _example(name):
    """An example script imported as a module (examples/ is not a package)."""
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def _free_port():
    import socket

    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


@pytest.mark.skipif(BACKEND != "jax", reason="several processes: JAX's keras.distribution")
def test_two_jax_processes_each_feeding_its_share_train_as_one_device(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3",
           # One CPU device per process, whatever conftest set for the others.
           "XLA_FLAGS": os.environ.get("XLA_FLAGS", "").replace(
               "--xla_force_host_platform_device_count=2", "")}
    address = f"127.0.0.1:{_free_port()}"
    processes = []
    for index in range(2):
        processes.append(subprocess.Popen(
            [sys.executable, "-c", PROCESSES, str(tmp_path / f"process{index}.npz")],
            env={**env, "KERAS_DISTRIBUTION_JOB_ADDRESSES": address,
                 "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
                 "KERAS_DISTRIBUTION_PROCESS_ID": str(index)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT))
    single = subprocess.run([sys.executable, "-c", PROCESSES, str(tmp_path / "single.npz")],
                            env=env, capture_output=True, text=True, cwd=ROOT, timeout=600)
    outputs = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=600)
        finally:
            process.kill()
        assert process.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert single.returncode == 0, single.stderr[-3000:]
    one = json.loads(single.stdout.strip().splitlines()[-1])
    assert [o["process"] for o in outputs] == [0, 1] and outputs[0]["replicas"] == 2
    reference = np.load(tmp_path / "single.npz")
    for index in range(2):
        result = np.load(tmp_path / f"process{index}.npz")
        assert sorted(result.files) == sorted(reference.files)
        for name in reference.files:  # weights, logits and merged logits
            np.testing.assert_allclose(result[name], reference[name], rtol=1e-4, atol=1e-5,
                                       err_msg=name)
        # 7 utterances on one device; on two, a weight-0 repeat tops them up to
        # 8 rows, 4 from each process (16 if each process fed the whole batch).
        assert (one["scores"]["rows"], outputs[index]["scores"].pop("rows")) == (7, 8)
        for metric, value in one["scores"].items():
            if metric == "rows":
                continue
            assert outputs[index]["scores"][metric] == pytest.approx(value, abs=1e-4), metric


@pytest.mark.skipif(BACKEND != "jax", reason="several processes: JAX's keras.distribution")
def test_the_example_over_two_processes_trains_and_each_saves_the_same_model(tmp_path):
    """Each process feeds its share, then predicts, merges and saves with its own
    copy, in its own --output; the tuner refuses several processes."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": os.environ.get("XLA_FLAGS", "").replace(
               "--xla_force_host_platform_device_count=2", ""),
           "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{_free_port()}",
           "KERAS_DISTRIBUTION_NUM_PROCESSES": "2"}
    processes = [subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "examples", "iemocap.py"), "--distribute",
         "--model", "speechformer", "--epochs", "1", "--hrf-expansion", "2",
         "--deploy-formats", "none", "--output", str(tmp_path / f"process{index}")],
        env={**env, "KERAS_DISTRIBUTION_PROCESS_ID": str(index)}, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for index in range(2)]
    logs = []
    for process in processes:
        try:
            logs.append(process.communicate(timeout=600)[0])
        finally:
            process.kill()
        assert process.returncode == 0, logs[-1][-3000:]
    assert "over 2 device(s), process 2 of 2; global batch 16" in logs[1]
    folds = [json.loads((tmp_path / f"process{i}" / "metrics.json").read_text())["folds"][0]
             for i in range(2)]
    assert folds[0]["replicas"] == folds[1]["replicas"] == 2
    assert folds[0]["best_val_ua"] == folds[1]["best_val_ua"]
    assert folds[0]["merged"]["confusion_matrix"] == folds[1]["merged"]["confusion_matrix"]
    assert sum(map(sum, folds[0]["merged"]["confusion_matrix"])) == folds[0]["test_rows"]
    import keras_hrf  # noqa: F401 - registers the models for loading

    weights = [keras.saving.load_model(tmp_path / f"process{i}" / "merged.keras").get_weights()
               for i in range(2)]
    for first, second in zip(*weights):
        np.testing.assert_array_equal(first, second)


def test_the_tuner_refuses_several_processes(tmp_path, monkeypatch):
    from keras_hrf import distribute

    class TwoProcesses:  # what DataParallel() is on each of two joined JAX processes
        num_replicas, process_index, process_count = 2, 0, 2

        def check_batch_size(self, batch_size):
            pass

        def close(self):
            pass

    monkeypatch.setattr(distribute, "DataParallel", TwoProcesses)
    tune_expansion = _example("tune_expansion")
    with pytest.raises(SystemExit, match=r"KerasTuner's own chief and workers"):
        tune_expansion.main(["--distribute", "--output", str(tmp_path / "tune")])
    assert not (tmp_path / "tune").exists()  # refused before any work
