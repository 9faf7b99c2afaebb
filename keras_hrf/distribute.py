"""Data-parallel training on one host's devices, on the backends' own engines.

    data_parallel = keras_hrf.distribute.DataParallel()   # every visible device
    with data_parallel.scope():
        model = keras_hrf.training.build_model(...)
        keras_hrf.recipe.compile_for_training(model, ...)
    with data_parallel.synchronized_batch_norm(model):
        model.fit(fold.batches("train", 16, shuffle=True),          # global batch 16
                  validation_data=fold.batches("validation", 16,
                                               batch_multiple=data_parallel.num_replicas))

- JAX: `keras.distribution.DataParallel` over every device
  `keras.distribution.list_devices()` sees. Several processes (one per host,
  from `KERAS_DISTRIBUTION_JOB_ADDRESSES`, `_NUM_PROCESSES`, `_PROCESS_ID`) are
  joined by `keras.distribution.initialize` (on CPUs over gloo); each process
  then feeds its own share of every global batch (`batch_options`: the
  batches of every process are padded to the same length, from the lengths
  alone), and `for_prediction` gives each process the trained model on its
  own devices for prediction, merging and export (Keras' `predict` cannot
  fetch outputs that span other processes' devices).
- TensorFlow: `tf.distribute.MirroredStrategy` over the local GPUs (or, with
  none, every logical CPU device). Several hosts are refused with a message:
  Keras 3's `fit` fails under `MultiWorkerMirroredStrategy`
  (keras-team/keras#20585; measured with Keras 3.15.1 and TensorFlow 2.21.0).
- PyTorch: refused. Keras' route there is `DistributedDataParallel` around a
  hand-written training loop, one process per device (`torchrun`), which
  replaces `fit` and with it the callbacks, the checkpoint and the resumable
  run this package trains with.

The global batch is the one asked for: each of N replicas takes batch / N rows
(so the batch must divide by N). Evaluation and prediction batches are filled
up to a multiple of N (`PaddedBatches(batch_multiple=N)`), weighted 0, so
the metrics are those of one device (TensorFlow's evaluation loss averages
each replica's mean, so a topped-up batch moves it slightly). Dropout draws
other masks per replica on TensorFlow. The trained model, its merge
(`keras_hrf.reparameterize`) and its export are the same as after training on
one device.
"""

import contextlib
import json
import os

import keras

BACKENDS = ("jax", "tensorflow")
# Measured with Keras 3.15.1 and TensorFlow 2.21.0: two workers on loopback, a
# one-Dense model, `fit` fails at once ("Attempt to convert a value
# (PerReplica...)"); upstream: keras-team/keras#20585, tensorflow/tensorflow#72388.
MULTI_WORKER_REFUSAL = (
    "TF_CONFIG names several workers, but Keras 3's fit does not run under TensorFlow's "
    "MultiWorkerMirroredStrategy (keras-team/keras#20585; Keras 3.15 with TensorFlow 2.21 "
    "fails on the first batch). Unset TF_CONFIG to train on this host's devices.")
JAX_HOST_VARIABLES = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                      "KERAS_DISTRIBUTION_PROCESS_ID")


class DataParallel:
    """Data-parallel training over every visible device (module docstring).

    Attributes:
        num_replicas: Devices that each take a share of a batch (all
            processes' together).
        process_index, process_count: This process and how many train
            together (JAX over several hosts; otherwise 0 and 1).
        strategy: On TensorFlow, the `tf.distribute.Strategy`; None on JAX.
        distribution: On JAX, the `keras.distribution.DataParallel` (set as
            Keras' global distribution); None on TensorFlow.

    Raises:
        ValueError: on a backend other than JAX and TensorFlow, and for
            several TensorFlow workers (`TF_CONFIG`).
    """

    def __init__(self):
        backend = keras.backend.backend()
        self.strategy = self.distribution = None
        self.process_index, self.process_count = 0, 1
        if backend == "jax":
            if _jax_processes() > 1:
                _join_jax_processes()
            import jax

            self.process_index, self.process_count = jax.process_index(), jax.process_count()
            devices = keras.distribution.list_devices()
            # Each process passes its own share of the batch (batch_options).
            self.distribution = keras.distribution.DataParallel(
                devices=devices, auto_shard_dataset=self.process_count == 1)
            keras.distribution.set_distribution(self.distribution)
            self.num_replicas = len(devices)
        elif backend == "tensorflow":
            import tensorflow as tf

            cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
            if sum(len(cluster.get(kind, [])) for kind in ("chief", "worker")) > 1:
                raise ValueError(MULTI_WORKER_REFUSAL)
            devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
            self.strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
            self.num_replicas = self.strategy.num_replicas_in_sync
        else:
            raise ValueError(
                f"Data-parallel training runs on the {' and '.join(BACKENDS)} backends "
                f"(KERAS_BACKEND=jax or tensorflow); this is {backend}. On PyTorch, Keras' "
                "route is DistributedDataParallel around a hand-written training loop, which "
                "this package's fit-based training does not use.")

    def check_batch_size(self, batch_size):
        """Raise ValueError unless `batch_size` divides evenly over the replicas."""
        if batch_size % self.num_replicas:
            raise ValueError(
                f"batch_size={batch_size} does not divide over {self.num_replicas} "
                f"data-parallel replicas; choose a multiple of {self.num_replicas}")

    def batch_options(self, part):
        """`PaddedBatches` / `FoldData.batches` options for one part
        ("train", "validation", "test"): evaluation batches filled up to a
        multiple of the replicas, and this process's share of each batch."""
        options = {"process_index": self.process_index, "process_count": self.process_count}
        if part != "train":
            options["batch_multiple"] = self.num_replicas
        return options

    @contextlib.contextmanager
    def locally(self):
        """Inside this, one process works on its own devices: Keras' global
        distribution is off while several processes train together (their
        `predict` cannot fetch outputs that span other processes' devices).
        Nothing changes for one process."""
        if self.process_count == 1:
            yield
            return
        keras.distribution.set_distribution(None)
        try:
            yield
        finally:
            keras.distribution.set_distribution(self.distribution)

    @contextlib.contextmanager
    def for_prediction(self, model):
        """Yields `(model, batch_multiple)` to predict, merge and export with
        after training: with several processes a copy of `model` on this
        process's devices (its trained weights, replicated on every device,
        copied over) and 1, inside `locally()`; otherwise `model` itself and
        the replicas."""
        if self.process_count == 1:
            yield model, self.num_replicas
            return
        weights = [keras.ops.convert_to_numpy(w) for w in model.weights]
        with self.locally():
            config = keras.saving.serialize_keras_object(model)
            config.pop("compile_config", None)  # for inference: no optimizer, loss, metrics
            copy = keras.saving.deserialize_keras_object(config)
            if not copy.built:
                copy.build(model.inputs[0].shape if getattr(model, "inputs", None) else None)
            for variable, value in zip(copy.weights, weights):
                variable.assign(value)
            yield copy, 1

    def scope(self):
        """Build and compile the model inside this (TensorFlow: the strategy's
        scope, which places the variables on every replica)."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    @contextlib.contextmanager
    def synchronized_batch_norm(self, model):
        """Train inside this: on TensorFlow with several replicas, every
        `BatchNormalization` of `model` uses the statistics of the global
        batch, as one device would (Keras' `synchronized`; otherwise each
        replica normalizes with its own share's). Switched back off on exit,
        because a model saved with `synchronized=True` loads on TensorFlow
        only. JAX computes the global batch's statistics by itself."""
        layers = []
        if self.strategy is not None and self.num_replicas > 1:
            layers = [layer for layer in model._flatten_layers()
                      if isinstance(layer, keras.layers.BatchNormalization)
                      and not layer.synchronized]
        for layer in layers:
            layer.synchronized = True
            # Keras' masked moments ignore `synchronized`: all-reduce them here.
            layer._moments = _synchronized_masked_moments(layer)
        try:
            yield model
        finally:
            for layer in layers:
                layer.synchronized = False
                del layer._moments  # back to the class's method

    def close(self):
        """Stop distributing (JAX: clear Keras' global distribution)."""
        if self.distribution is not None:
            keras.distribution.set_distribution(None)


def _synchronized_masked_moments(layer):
    """`layer._moments` whose masked branch averages over the masked frames of
    every replica (TensorFlow), in two passes as Keras' own: the mean, then
    the variance about it."""
    original = type(layer)._moments.__get__(layer)

    def moments(inputs, mask):
        if mask is None:
            return original(inputs, mask)  # Keras synchronizes this branch itself
        import tensorflow as tf

        context = tf.distribute.get_replica_context()

        def total(value):
            value = tf.reduce_sum(value, axis=layer._reduction_axes)
            if context is None or context.num_replicas_in_sync == 1:
                return value
            return context.all_reduce(tf.distribute.ReduceOp.SUM, value)

        weight = tf.cast(tf.broadcast_to(tf.expand_dims(mask, -1), tf.shape(inputs)),
                         inputs.dtype)
        count = total(weight) + keras.backend.epsilon()
        mean = total(inputs * weight) / count
        variance = total(tf.square(inputs - mean) * weight) / count
        return mean, variance

    return moments


def _jax_processes():
    addresses = [a for a in os.environ.get(JAX_HOST_VARIABLES[0], "").split(",") if a]
    return max(len(addresses), int(os.environ.get(JAX_HOST_VARIABLES[1]) or 1))


def _join_jax_processes():
    """`keras.distribution.initialize` from the `KERAS_DISTRIBUTION_*` variables,
    once per process; on CPUs the processes' collectives go over gloo (JAX has
    none across CPU processes otherwise)."""
    import jax

    if jax.distributed.is_initialized():
        return
    missing = [name for name in JAX_HOST_VARIABLES if not os.environ.get(name)]
    if missing:
        raise ValueError(
            f"Several JAX processes need all of {list(JAX_HOST_VARIABLES)}; {missing} unset "
            "(the coordinator's host:port, the number of processes, this one's index)")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    keras.distribution.initialize()


@contextlib.contextmanager
def for_flag(distribute, batch_size):
    """A script's `--distribute`: yields a `DataParallel` (or None when
    `distribute` is false) checked against the global `batch_size`, and
    closes it on exit. A refusal is a `SystemExit` that says why."""
    if not distribute:
        yield None
        return
    try:
        data_parallel = DataParallel()
        data_parallel.check_batch_size(batch_size)
    except ValueError as error:
        raise SystemExit(f"--distribute: {error}") from None
    processes = (f", process {data_parallel.process_index + 1} of "
                 f"{data_parallel.process_count}" if data_parallel.process_count > 1 else "")
    print(f"Data-parallel training over {data_parallel.num_replicas} device(s){processes}; "
          f"global batch {batch_size}")
    try:
        yield data_parallel
    finally:
        data_parallel.close()  # JAX: Keras' global distribution
