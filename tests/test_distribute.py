"""Data-parallel training (keras_hrf.distribute) on 2 virtual CPU devices.

The devices must exist before the backend starts, so each check runs in a
fresh interpreter: XLA_FLAGS on JAX, logical CPU devices on TensorFlow.
"""

import json
import os
import subprocess
import sys

import keras
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
        sys.path.insert(0, os.path.join(ROOT, "examples"))
        try:
            import iemocap
        finally:
            sys.path.pop(0)
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
        sys.path.insert(0, os.path.join(ROOT, "examples"))
        try:
            import tune_expansion
        finally:
            sys.path.pop(0)
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
def test_several_jax_processes_are_refused_until_each_feeds_its_share(monkeypatch):
    from keras_hrf import distribute

    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    with pytest.raises(ValueError, match=r"several JAX processes; each would have to feed"):
        distribute.DataParallel()
    assert keras.distribution.distribution() is None
