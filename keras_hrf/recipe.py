"""The training recipe: augmentation, schedule and optimizer, in one place.

`examples/iemocap.py`, `examples/tune_expansion.py`, `keras_hrf.tuning` and
every benchmark train through this module, so a benchmark's number is what
the examples produce with the same flags. The defaults are the recipe the
accuracy tables measured (benchmarks/RESULTS.md): SpecAugment (two frequency
masks of up to 8 bins, two time masks of up to 5 % of the frames), AdamW at
the model's own peak rate with weight decay 0.05, a linear warm-up over the
first 10 % of the steps (at most 200) and a cosine decay to 1 % of the peak,
batch 16, 40 epochs. The first tables trained 20 epochs; 40 measured better
on both corpora and all three architectures (15 of 19 paired runs).

    recipe = keras_hrf.recipe.Recipe()                       # the defaults
    model = keras_hrf.Conformer(4, spec_augment=recipe.spec_augment_options())
    keras_hrf.recipe.compile_for_training(model, 4, recipe, steps_per_epoch=len(batches),
                                          model_name="conformer")
"""

import dataclasses

import keras

from keras_hrf.metrics import UnweightedAccuracy

# Peak learning rates under AdamW (benchmarks/RESULTS.md), of the lite models
# and of the large ones. The lite models learn at 1e-3. The large ones were
# tuned apart, on RAVDESS fold 1's validation among 1e-3, 3e-4 and 1e-4: at
# 1e-3 the large Conformer sat near chance for 25 epochs and the large
# SpeechFormer collapsed to one output; every large row of the paper's table
# trained at 3e-4.
DEFAULT_LEARNING_RATES = {"conformer": 1e-3, "convtransformer": 1e-3, "speechformer": 1e-3}
LARGE_LEARNING_RATES = {"conformer": 3e-4, "convtransformer": 3e-4, "speechformer": 3e-4}

OPTIMIZERS = ("adamw", "sgd")


class _RateOncePerStep:
    """Evaluate the learning-rate schedule once per optimizer step.

    Keras' TensorFlow optimizers apply decoupled weight decay variable by
    variable and ask for the current rate each time, so a schedule's ops are
    traced once per variable: 173 times a step for the lite Conformer with
    HRF. Evaluated once, TensorFlow's first epoch (its tracing) took 40 %
    less time on the 2-core CPU (benchmarks/optimizer_overhead.py); later
    steps showed no clear difference. The value is the one the plain
    optimizer uses, so training is unchanged.
    """

    def apply(self, grads, trainable_variables=None):
        self._rate_this_step = None
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self._rate_this_step = None  # a tensor of this step's trace only

    def _get_current_learning_rate(self):
        if getattr(self, "_rate_this_step", None) is None:
            self._rate_this_step = super()._get_current_learning_rate()
        return self._rate_this_step


@keras.saving.register_keras_serializable(package="keras_hrf")
class AdamW(_RateOncePerStep, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` that evaluates its schedule once per step."""


@keras.saving.register_keras_serializable(package="keras_hrf")
class SGD(_RateOncePerStep, keras.optimizers.SGD):
    """`keras.optimizers.SGD` that evaluates its schedule once per step."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a model is trained. The defaults are the measured recipe's.

    Attributes:
        epochs: Passes over the training rows.
        batch_size: Utterances per batch.
        learning_rate: Peak learning rate; None: the model's own at its
            size (`DEFAULT_LEARNING_RATES`, `LARGE_LEARNING_RATES`).
        optimizer: `"adamw"` or `"sgd"` (with `momentum`, as SpeechFormer's
            reference trains).
        weight_decay: Decoupled weight decay of either optimizer.
        momentum: SGD's momentum.
        warmup_fraction: Linear warm-up over this fraction of all steps...
        max_warmup_steps: ...but at most this many steps.
        final_learning_rate_fraction: The cosine decay ends at this fraction
            of the peak.
        clipnorm: Clip the global gradient norm to this (None: no clipping).
        spec_augment: SpecAugment masks while training (merged away).
        max_seconds: Utterances are cut to this length.
    """

    epochs: int = 40
    batch_size: int = 16
    learning_rate: float = None
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_fraction: float = 0.1
    max_warmup_steps: int = 200
    final_learning_rate_fraction: float = 0.01
    clipnorm: float = None
    spec_augment: bool = True
    max_seconds: float = 7.5

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Recipe: optimizer={self.optimizer!r}; choose one of "
                             f"{list(OPTIMIZERS)}")
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"Recipe: `{name}` must be a positive integer, received "
                                 f"{name}={getattr(self, name)!r}")
        for name in ("learning_rate", "clipnorm"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"Recipe: `{name}` must be positive or None, received "
                                 f"{name}={value!r}")
        if not self.max_seconds > 0:
            raise ValueError(f"Recipe: `max_seconds` must be positive, received "
                             f"max_seconds={self.max_seconds!r}")
        if self.weight_decay < 0 or not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"Recipe: weight_decay={self.weight_decay!r} must be >= 0 and "
                             f"warmup_fraction={self.warmup_fraction!r} in [0, 1)")

    def peak_learning_rate(self, model_name, size="lite"):
        """`learning_rate`, or the default of the model at that size."""
        if self.learning_rate is not None:
            return self.learning_rate
        return default_learning_rate(model_name, size)

    def spec_augment_options(self):
        """The models' `spec_augment` argument: True (the layer's defaults) or None."""
        return True if self.spec_augment else None

    def warmup_steps(self, steps_per_epoch):
        steps = self.epochs * steps_per_epoch
        return min(int(steps * self.warmup_fraction), self.max_warmup_steps)

    def learning_rate_schedule(self, peak, steps_per_epoch):
        """Linear warm-up from 0 to `peak`, then cosine decay to
        `final_learning_rate_fraction * peak` at the last step."""
        steps = self.epochs * steps_per_epoch
        warmup = self.warmup_steps(steps_per_epoch)
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=max(steps - warmup, 1), warmup_target=peak, warmup_steps=warmup,
            alpha=self.final_learning_rate_fraction,
        )

    def make_optimizer(self, peak, steps_per_epoch):
        """Keras' AdamW or SGD on `learning_rate_schedule`; on TensorFlow the
        subclasses that evaluate the schedule once a step. PyTorch's Keras
        optimizers already do (and are replaced by fused ones only when
        their class is Keras' own); JAX traces it into one XLA program."""
        schedule = self.learning_rate_schedule(peak, steps_per_epoch)
        clipping = {"global_clipnorm": self.clipnorm} if self.clipnorm else {}
        once_a_step = keras.backend.backend() == "tensorflow"
        if self.optimizer == "sgd":
            sgd = SGD if once_a_step else keras.optimizers.SGD
            return sgd(schedule, momentum=self.momentum, weight_decay=self.weight_decay or None,
                       **clipping)
        adamw = AdamW if once_a_step else keras.optimizers.AdamW
        return adamw(schedule, weight_decay=self.weight_decay, **clipping)


def default_learning_rate(model_name, size="lite"):
    """The peak AdamW rate the recipe starts `model_name` at, for its `size`."""
    rates = {"lite": DEFAULT_LEARNING_RATES, "large": LARGE_LEARNING_RATES}
    if size not in rates:
        raise ValueError(f"Unknown size {size!r}; choose one of {list(rates)}")
    try:
        return rates[size][model_name]
    except KeyError:
        raise ValueError(f"Unknown model {model_name!r}; choose one of "
                         f"{sorted(DEFAULT_LEARNING_RATES)}") from None


def default_learning_rates_text():
    """`"lite 0.001, large 0.0003"` (every model alike), or each model's rates, for --help."""
    lite, large = set(DEFAULT_LEARNING_RATES.values()), set(LARGE_LEARNING_RATES.values())
    if len(lite) == len(large) == 1:
        return f"lite {lite.pop():g}, large {large.pop():g}"
    return ", ".join(f"{name} {rate:g} (large {LARGE_LEARNING_RATES[name]:g})"
                     for name, rate in DEFAULT_LEARNING_RATES.items())


def compile_for_training(model, num_classes, recipe, steps_per_epoch, model_name=None,
                         learning_rate=None, size="lite"):
    """Compile `model` for `recipe`: its optimizer and schedule over
    `recipe.epochs * steps_per_epoch` steps, sparse cross-entropy on logits,
    accuracy and UA (logged `"ua"` / `"val_ua"`). Loss and metrics honour
    sample weights as a weighted mean, so the rows that data-parallel
    evaluation repeats to fill a batch (weight 0) count nowhere.

    Args:
        learning_rate: The peak rate; None: `recipe.peak_learning_rate(model_name, size)`.
        size: The model's preset, `"lite"` or `"large"`, for its default rate.
    """
    peak = (learning_rate if learning_rate is not None
            else recipe.peak_learning_rate(model_name, size))
    model.compile(
        optimizer=recipe.make_optimizer(peak, steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                        reduction="mean_with_sample_weight"),
        weighted_metrics=["accuracy", UnweightedAccuracy(num_classes)],
        # XLA on TensorFlow compiles each new batch shape for longer than these
        # small models train; JAX always compiles, PyTorch runs eagerly.
        jit_compile=False if keras.backend.backend() == "tensorflow" else "auto",
    )
    return model


def add_recipe_arguments(parser, epochs=None, learning_rate=True):
    """`--epochs`, `--batch-size`, `--learning-rate` (unless `learning_rate`
    is False: a caller that searches it), `--optimizer`, `--weight-decay`,
    `--momentum`, `--clipnorm`, `--no-spec-augment`, `--max-seconds`, with
    the recipe's defaults (`epochs` overrides one)."""
    default = Recipe()
    group = parser.add_argument_group("training recipe (defaults: the best measured, "
                                      "benchmarks/RESULTS.md)")
    group.add_argument("--epochs", type=int, default=epochs or default.epochs)
    group.add_argument("--batch-size", type=int, default=default.batch_size)
    if learning_rate:
        group.add_argument("--learning-rate", type=float, default=None,
                           help="peak learning rate; default: the model's at its size ("
                           + default_learning_rates_text() + ")")
    group.add_argument("--optimizer", choices=OPTIMIZERS, default=default.optimizer)
    group.add_argument("--weight-decay", type=float, default=default.weight_decay)
    group.add_argument("--momentum", type=float, default=default.momentum, help="SGD only")
    group.add_argument("--clipnorm", type=float, default=None,
                       help="clip the global gradient norm (default: no clipping)")
    group.add_argument("--no-spec-augment", dest="spec_augment", action="store_false",
                       help="train without SpecAugment")
    group.add_argument("--max-seconds", type=float, default=default.max_seconds,
                       help="cut longer utterances to this length")
    return group


RECIPE_ARGUMENTS = ("epochs", "batch_size", "learning_rate", "optimizer", "weight_decay",
                    "momentum", "clipnorm", "spec_augment", "max_seconds")


def recipe_from_args(parser, args):
    """The `Recipe` of parsed `add_recipe_arguments`; bad values are parser errors."""
    try:
        return Recipe(**{name: getattr(args, name) for name in RECIPE_ARGUMENTS})
    except ValueError as error:
        parser.error(str(error))
