import keras
import numpy as np
import pytest
from helpers import fast_compile_options
from helpers import to_numpy

from keras_hrf.metrics import UnweightedAccuracy
from keras_hrf.metrics import classification_report
from keras_hrf.metrics import confusion_matrix
from keras_hrf.metrics import macro_f1
from keras_hrf.metrics import unweighted_accuracy
from keras_hrf.metrics import weighted_accuracy

# 4 of class 0 (3 right), 2 of class 1 (1 right), 2 of class 2 (2 right).
Y_TRUE = [0, 0, 0, 0, 1, 1, 2, 2]
Y_PRED = [0, 0, 0, 1, 1, 2, 2, 2]


def test_numbers_by_hand():
    assert confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == [[3, 1, 0], [0, 1, 1], [0, 0, 2]]
    assert weighted_accuracy(Y_TRUE, Y_PRED) == pytest.approx(6 / 8)
    assert unweighted_accuracy(Y_TRUE, Y_PRED, 3) == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    # precision 1, 1/2, 2/3; recall 3/4, 1/2, 1
    f1 = [2 * 1 * 0.75 / 1.75, 0.5, 2 * (2 / 3) / (5 / 3)]
    assert macro_f1(Y_TRUE, Y_PRED, 3) == pytest.approx(np.mean(f1))


def test_absent_classes_are_left_out_and_reported():
    report = classification_report([0, 0, 1], [0, 1, 1], ["angry", "happy", "sad"])
    assert report["ua"] == pytest.approx((0.5 + 1.0) / 2)
    assert report["absent_classes"] == ["sad"]
    assert report["per_class"]["angry"]["support"] == 2


def test_out_of_range_labels_are_named():
    with pytest.raises(ValueError, match=r"y_pred holds class 5, outside 0..2"):
        confusion_matrix([0, 1], [0, 5], 3)


@pytest.mark.parametrize("seed", [0, 1])
def test_keras_metric_equals_the_numpy_ua_over_batches(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=50)
    labels[labels == 3] = 2  # class 3 never appears
    logits = rng.normal(size=(50, 4)).astype("float32")
    metric = UnweightedAccuracy(4)
    for start in range(0, 50, 16):
        metric.update_state(labels[start : start + 16], logits[start : start + 16])
    expected = unweighted_accuracy(labels, logits.argmax(-1), 4)
    assert float(to_numpy(metric.result())) == pytest.approx(expected, abs=1e-6)
    metric.reset_state()
    assert float(to_numpy(metric.result())) == 0.0


def test_keras_metric_sample_weights_count_examples():
    metric = UnweightedAccuracy(2)
    logits = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], "float32")
    metric.update_state(np.array([0, 1, 1]), logits, sample_weight=np.array([1.0, 3.0, 1.0]))
    # class 0: 1/1; class 1: weight 1 right out of 4
    assert float(to_numpy(metric.result())) == pytest.approx((1.0 + 0.25) / 2)


def test_keras_metric_in_fit_and_its_config():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[UnweightedAccuracy(3)],
        **fast_compile_options(),
    )
    x = np.random.default_rng(0).normal(size=(12, 3)).astype("float32")
    y = np.arange(12) % 3
    history = model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0)
    assert "val_ua" in history.history
    predicted = model.predict(x, verbose=0).argmax(-1)
    assert history.history["val_ua"][0] == pytest.approx(unweighted_accuracy(y, predicted, 3), abs=1e-6)
    config = UnweightedAccuracy(5, name="ua5").get_config()
    assert UnweightedAccuracy.from_config(config).get_config() == config


def test_keras_metric_rejects_bad_class_counts():
    with pytest.raises(ValueError, match=r"num_classes=1"):
        UnweightedAccuracy(1)
