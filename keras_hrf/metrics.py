"""Speech-emotion metrics: WA, UA, macro-F1 and the confusion matrix.

* WA (weighted accuracy) is plain accuracy: correct / total.
* UA (unweighted accuracy) is the mean of per-class recalls, so every class
  counts the same however rare it is: the headline number in SER papers.
* Macro-F1 is the mean of per-class F1 scores.

Classes with no true example in the evaluated set have no recall; they are
left out of UA and macro-F1 (and reported by `classification_report`), rather
than counted as 0 or 1.

`UnweightedAccuracy` is a Keras metric (a confusion matrix kept in a
variable, updated with `keras.ops`), so UA can be a training, checkpointing
or tuning objective on every backend.
"""

import keras
import numpy as np
from keras import ops

from keras_hrf.validation import check_positive_int


def confusion_matrix(y_true, y_pred, num_classes):
    """`(num_classes, num_classes)` counts: rows are true, columns predicted."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true and y_pred differ in length: {y_true.shape[0]} vs {y_pred.shape[0]}"
        )
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        bad = values[(values < 0) | (values >= num_classes)]
        if bad.size:
            raise ValueError(
                f"{name} holds class {int(bad[0])}, outside 0..{num_classes - 1} "
                f"(num_classes={num_classes})"
            )
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def _per_class(matrix):
    matrix = np.asarray(matrix, dtype=np.float64)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    correct = np.diag(matrix)
    present = support > 0
    recall = np.divide(correct, support, out=np.zeros_like(correct), where=present)
    precision = np.divide(
        correct, predicted, out=np.zeros_like(correct), where=predicted > 0
    )
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(correct),
        where=(precision + recall) > 0,
    )
    return present, recall, precision, f1


def weighted_accuracy(y_true, y_pred):
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if y_true.size == 0:
        raise ValueError("weighted_accuracy of an empty set is undefined")
    return float(np.mean(y_true == y_pred))


def unweighted_accuracy(y_true, y_pred, num_classes):
    """Mean recall over the classes present in `y_true`."""
    present, recall, _, _ = _per_class(confusion_matrix(y_true, y_pred, num_classes))
    if not present.any():
        raise ValueError("unweighted_accuracy of an empty set is undefined")
    return float(recall[present].mean())


def macro_f1(y_true, y_pred, num_classes):
    """Mean F1 over the classes present in `y_true`."""
    present, _, _, f1 = _per_class(confusion_matrix(y_true, y_pred, num_classes))
    if not present.any():
        raise ValueError("macro_f1 of an empty set is undefined")
    return float(f1[present].mean())


def classification_report(y_true, y_pred, class_names):
    """WA, UA, macro-F1, the confusion matrix and per-class numbers, as a
    JSON-serializable dict."""
    num_classes = len(class_names)
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    present, recall, precision, f1 = _per_class(matrix)
    return {
        "wa": weighted_accuracy(y_true, y_pred),
        "ua": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "confusion_matrix": matrix.tolist(),
        "classes": list(class_names),
        "absent_classes": [c for c, p in zip(class_names, present) if not p],
        "per_class": {
            name: {
                "support": int(matrix[i].sum()),
                "recall": float(recall[i]),
                "precision": float(precision[i]),
                "f1": float(f1[i]),
            }
            for i, name in enumerate(class_names)
        },
    }


@keras.saving.register_keras_serializable(package="keras_hrf")
class UnweightedAccuracy(keras.metrics.Metric):
    """UA: the mean per-class recall, for sparse integer labels and logits or
    probabilities (the predicted class is the argmax).

    Classes with no example among the labels seen so far are left out of the
    mean. Use it as a monitor (`"val_ua"`) for checkpoints, early stopping or
    KerasTuner's objective (direction "max").
    """

    def __init__(self, num_classes, name="ua", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = check_positive_int("num_classes", num_classes, minimum=2)
        self.confusion = self.add_variable(
            shape=(num_classes, num_classes), initializer="zeros", name="confusion",
            dtype="float32",
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        y_pred = ops.reshape(ops.argmax(y_pred, axis=-1), (-1,))
        true_hot = ops.one_hot(y_true, self.num_classes, dtype="float32")
        pred_hot = ops.one_hot(y_pred, self.num_classes, dtype="float32")
        if sample_weight is not None:
            weight = ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1))
            true_hot = true_hot * weight
        self.confusion.assign_add(ops.matmul(ops.transpose(true_hot), pred_hot))

    def result(self):
        support = ops.sum(self.confusion, axis=1)
        correct = ops.diagonal(self.confusion)
        present = ops.cast(support > 0, "float32")
        recall = correct / ops.maximum(support, 1.0)
        return ops.sum(recall * present) / ops.maximum(ops.sum(present), 1.0)

    def reset_state(self):
        self.confusion.assign(ops.zeros((self.num_classes, self.num_classes)))

    def get_config(self):
        return {"num_classes": self.num_classes, "name": self.name, "dtype": self.dtype}
