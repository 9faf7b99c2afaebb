"""KerasTuner search over the HRF expansion width.

`HRFHyperModel` builds a `Conformer`, `ConvTransformer` or `SpeechFormer` whose
HRF expansion width is a hyperparameter. Width 0 is the plain model, so the
baseline competes in the same search, on the same data, with the same budget,
and so, by default (`hrf_norms=(None, "batch")`), does the BatchNorm alone.
Any of KerasTuner's own tuners runs it, alone or distributed with KerasTuner's
chief/worker oracle (`KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`,
`KERASTUNER_ORACLE_PORT`):

    hypermodel = keras_hrf.tuning.HRFHyperModel(           # the schedule spans 10 epochs
        num_classes=4, expansions=(0, 2, 4), recipe=keras_hrf.recipe.Recipe(epochs=10),
        steps_per_epoch=len(train_batches))
    tuner = keras_hrf.tuning.make_tuner("random", hypermodel, max_trials=8,
                                        directory="runs/tune", project_name="search")
    tuner.search(train_batches, validation_data=validation_batches, epochs=10)
    table = keras_hrf.tuning.trials_table(tuner.oracle)   # one row per trial
    merged = keras_hrf.reparameterize(tuner.get_best_models(1)[0])

The objective is validation UA (`keras_hrf.metrics.UnweightedAccuracy`,
logged as `"val_ua"`), maximized.

Importing this module makes KerasTuner's state files (`oracle.json`, each
`trial.json`, the tuner's own) written atomically, and makes a reloaded oracle
retry a trial that a kill left RUNNING before the oracle saved it, so that a
search killed at any moment can resume, whichever tuner runs it (see
`_save_json_atomically` and `retry_trials_the_oracle_lost`).
"""

import contextlib
import functools
import json
import numbers
import os
import time

import keras_tuner
import numpy as np
import pandas as pd
from keras_tuner.src import utils as kerastuner_utils

from keras_hrf import atomic, training
from keras_hrf.layers.hrf_block import validate_hrf_targets
from keras_hrf.layers.hrf_dense import HRFDense

OBJECTIVE = "val_ua"
TUNERS = {
    "random": keras_tuner.RandomSearch,
    "bayesian": keras_tuner.BayesianOptimization,
    "hyperband": keras_tuner.Hyperband,
}


_kerastuner_save_json = kerastuner_utils.save_json


def _save_json_atomically(path, obj):
    """KerasTuner's `utils.save_json`, written to a temporary file and renamed.

    KerasTuner opens its state files with "w" and then writes them, so a
    process killed in between leaves an empty `oracle.json` or `trial.json`:
    the search cannot resume (`JSONDecodeError`), and a chief's workers read
    a half-written oracle. Renaming means a reader or a resumed search sees
    the old file or the new one, never part of one. Remote paths (`gs://`)
    keep KerasTuner's own writer."""
    if "://" in str(path):
        return _kerastuner_save_json(path, obj)
    text = json.dumps(obj)
    with atomic.atomic_path(path) as temporary, open(temporary, "w") as handle:
        handle.write(text)
    return text


# Every KerasTuner state file goes through this one function (`Stateful.save`,
# the tuner's build configs), looked up on the module at each call.
kerastuner_utils.save_json = _save_json_atomically


def check_search_state(project_dir):
    """Raise a `ValueError` naming the first JSON state file in `project_dir`
    that does not parse (one cut short by a kill under a KerasTuner writer that
    was not atomic), instead of KerasTuner's bare `JSONDecodeError`."""
    for folder, folders, names in os.walk(project_dir):
        # Hidden `.*.partial` folders hold writes a kill interrupted; never read.
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in sorted(names):
            if not name.endswith(".json"):
                continue
            path = os.path.join(folder, name)
            try:
                with open(path) as handle:
                    json.load(handle)
            except ValueError as error:
                raise ValueError(
                    f"The search in {project_dir} cannot resume: {path} is not valid JSON "
                    f"({error}); it was cut short while being written. Move that trial's "
                    "folder aside (or the file, if it is the oracle's or a tuner's) and run "
                    "again, or start afresh with `overwrite=True` / another project name."
                ) from None


def objective():
    return keras_tuner.Objective(OBJECTIVE, direction="max")


def _choices(name, values, check):
    values = list(values)
    if not values:
        raise ValueError(f"Empty search space: `{name}` lists no value to try")
    for value in values:
        check(value)
    if len(set(values)) != len(values):
        raise ValueError(f"`{name}` lists a value twice: {values}")
    return values


def _number_check(name, low, high, low_inclusive=True):
    def check(value):
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        ok = ok and (value >= low if low_inclusive else value > low) and value < high
        if not ok:
            bound = "[" if low_inclusive else "("
            raise ValueError(
                f"Received an invalid value in `{name}`: expected numbers in "
                f"{bound}{low}, {high}). Received: {value!r}"
            )

    return check


def _targets_name(targets):
    """`("ffn", "attention")` or `"ffn+attention"` -> `"ffn+attention"`."""
    if isinstance(targets, str):
        targets = targets.split("+")
    return "+".join(validate_hrf_targets(targets))


class HRFHyperModel(keras_tuner.HyperModel):
    """One of the package's models, with the HRF expansion width to tune.

    Hyperparameters (a list with one value is recorded as fixed, not searched):
        `hrf_expansion`: the expansion width as a multiple of the model width;
            0 is no expansion: the plain model (or the BatchNorm alone, below).
        `hrf_targets`, `hrf_norm`: where `hrf_expansion` > 0.
        `norm_only`, `norm_only_targets`: where `hrf_expansion` is 0 and
            `hrf_norms` holds `"batch"`: `norm_only="batch"` is a BatchNorm
            alone before each targeted projection (merged away like HRF),
            `"none"` the plain model.
        `learning_rate`, `dropout`.

    Args:
        num_classes: Classes of the task.
        input_dim: Features per frame.
        model: `"conformer"`, `"convtransformer"` or `"speechformer"`.
        size: The model preset, `"lite"` or `"large"`.
        expansions: Widths to try, e.g. `(0, 1, 2, 4, 8)`.
        hrf_targets: Target sets to try, each a tuple such as `("ffn",)` or a
            string such as `"ffn+attention"`.
        hrf_norms: `None` and/or `"batch"` (default: both); with 0 among the
            `expansions`, `"batch"` also tries the BatchNorm alone at width 0,
            the variant that scored best on real speech with the AdamW
            recipe (`benchmarks/RESULTS.md`). `(None,)` is the paper's space: HRF
            widths against the plain model.
        learning_rates, dropouts: Values to try; `learning_rates=None` is the
            model's `training.default_learning_rate` at its `size`.
        recipe: The `keras_hrf.recipe.Recipe` each trial trains with (its
            SpecAugment, optimizer, weight decay and schedule over
            `recipe.epochs`); default: the recipe's defaults. Its
            `learning_rate` is replaced by the searched one.
        steps_per_epoch: Training batches per epoch, for the schedule; default:
            100. Give it (`FoldData.steps_per_epoch`) so that the decay ends
            with the trial.
        model_kwargs: More constructor arguments (e.g. `num_layers`).
        data_parallel: A `keras_hrf.distribute.DataParallel`: each trial's
            model is built in its scope and trained data-parallel (give the
            validation batches `batch_multiple=data_parallel.num_replicas`).
    """

    def __init__(self, num_classes, input_dim=80, model="conformer", size="lite",
                 expansions=(0, 1, 2, 4, 8), hrf_targets=(("ffn",),), hrf_norms=(None, "batch"),
                 learning_rates=None, dropouts=(0.1,), recipe=None, steps_per_epoch=None,
                 model_kwargs=None, name=None, tunable=True, data_parallel=None):
        super().__init__(name=name, tunable=tunable)
        self.model_class = training.model_class(model)
        if size not in self.model_class.presets:
            raise ValueError(f"Unknown size {size!r}; choose one of {sorted(self.model_class.presets)}")
        self.num_classes = num_classes
        self.input_dim = input_dim
        self.model_name = model
        self.size = size
        self.expansions = _choices("expansions", expansions, _number_check("expansions", 0, 1e3))
        self.expansions = [int(e) if float(e).is_integer() else float(e) for e in self.expansions]
        if len({type(e) for e in self.expansions}) > 1:
            self.expansions = [float(e) for e in self.expansions]
        self.hrf_targets = _choices("hrf_targets", [_targets_name(t) for t in hrf_targets],
                                    lambda t: None)
        self.hrf_norms = _choices("hrf_norms", ["none" if n is None else n for n in hrf_norms],
                                  self._check_norm)
        if learning_rates is None:
            learning_rates = (training.default_learning_rate(model, size),)
        self.learning_rates = _choices("learning_rates", [float(v) for v in learning_rates],
                                       _number_check("learning_rates", 0, 1.0, False))
        self.dropouts = _choices("dropouts", [float(v) for v in dropouts],
                                 _number_check("dropouts", 0, 1.0))
        self.recipe = recipe or training.Recipe()
        self.steps_per_epoch = steps_per_epoch or 100
        self.model_kwargs = dict(model_kwargs or {})
        self.data_parallel = data_parallel

    @staticmethod
    def _check_norm(value):
        if value not in ("none", "batch"):
            raise ValueError(f"Received an invalid value in `hrf_norms`: expected None or "
                             f"'batch'. Received: {value!r}")

    @staticmethod
    def _pick(hp, name, values):
        if len(values) == 1:
            return hp.Fixed(name, values[0])
        return hp.Choice(name, values)

    def build(self, hp):
        expansion = self._pick(hp, "hrf_expansion", self.expansions)
        targets, norm = self._pick_hrf_options(hp, expansion)
        learning_rate = self._pick(hp, "learning_rate", self.learning_rates)
        dropout = self._pick(hp, "dropout", self.dropouts)
        with self.data_parallel.scope() if self.data_parallel else contextlib.nullcontext():
            model = self.model_class(
                self.num_classes, input_dim=self.input_dim, size=self.size,
                hrf_expansion=expansion or None, hrf_norm=norm, hrf_targets=targets,
                dropout=dropout, spec_augment=self.recipe.spec_augment_options(),
                **self.model_kwargs,
            )
            return training.compile_for_training(model, self.num_classes, self.recipe,
                                                 self.steps_per_epoch, learning_rate=learning_rate)

    def _pick_hrf_options(self, hp, expansion):
        """Targets and norm, each active only where it changes the model.

        Width > 0: `hrf_targets` and `hrf_norm` of the expansion. Width 0, when
        `"batch"` is among the norms: `norm_only` (`"none"` is the plain model,
        `"batch"` a BatchNorm alone before each targeted projection) and, for
        the latter, `norm_only_targets`. KerasTuner needs a name per branch (it
        keeps one value per name), and every scope is entered whatever the
        width so that KerasTuner finds each branch before the first trial.
        """
        targets, norm = "ffn", "none"
        with_hrf = [e for e in self.expansions if e > 0]
        if with_hrf:
            with self._expansion_scope(hp, with_hrf):
                if expansion > 0:
                    targets = self._pick(hp, "hrf_targets", self.hrf_targets)
                    norm = self._pick(hp, "hrf_norm", self.hrf_norms)
        # Without "batch", width 0 is just the plain model: nothing to pick, and the
        # space is the one this class had before the BatchNorm-only option.
        if 0 in self.expansions and "batch" in self.hrf_norms:
            with self._expansion_scope(hp, [0]):
                if expansion == 0:
                    norm = self._pick(hp, "norm_only", self.hrf_norms)
                    with self._norm_only_scope(hp):
                        if norm == "batch":
                            targets = self._pick(hp, "norm_only_targets", self.hrf_targets)
        return tuple(targets.split("+")), None if norm == "none" else norm

    def _expansion_scope(self, hp, widths):
        if len(self.expansions) > 1:
            return hp.conditional_scope("hrf_expansion", widths)
        return contextlib.nullcontext()  # one width: nothing to condition on

    def _norm_only_scope(self, hp):
        if len(self.hrf_norms) > 1:
            return hp.conditional_scope("norm_only", ["batch"])
        return contextlib.nullcontext()

    def fit(self, hp, model, *args, **kwargs):
        """`model.fit`, timed. Returns the best epoch's validation metrics, the
        training time and the parameter counts, which KerasTuner records."""
        started = time.perf_counter()
        with (self.data_parallel.synchronized_batch_norm(model) if self.data_parallel
              else contextlib.nullcontext()):
            history = model.fit(*args, **kwargs)
        seconds = time.perf_counter() - started
        scores = history.history.get(OBJECTIVE)
        if not scores:
            raise ValueError(
                f"The objective {OBJECTIVE!r} was not logged: pass `validation_data` to "
                "`search()`. Logged: " + ", ".join(sorted(history.history))
            )
        best = int(np.argmax(scores))
        results = {name: float(values[best]) for name, values in history.history.items()
                   if name.startswith("val_")}
        results.update(
            train_seconds=seconds,
            epochs_run=len(scores),
            params_training=model.count_params(),
            params_deployed=deployed_parameter_count(model),
        )
        return results


def deployed_parameter_count(model):
    """Parameters of `model` once every `HRFDense` is merged into a `Dense`
    (the expansion and its BatchNorm vanish), without merging anything."""
    extra = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, HRFDense) and layer.built:
            # The merged Dense maps the layer's input width to its units.
            input_dim = (layer.expansion_kernel if layer.expansion_kernel is not None
                         else layer.kernel).shape[0]
            merged = input_dim * layer.units + (layer.units if layer.use_bias else 0)
            extra += layer.count_params() - merged
    return model.count_params() - extra


def make_tuner(name, hypermodel, max_trials, max_epochs=None, seed=None, **kwargs):
    """KerasTuner's `RandomSearch`, `BayesianOptimization` or `Hyperband`,
    maximizing validation UA. Hyperband schedules epochs up to `max_epochs`
    and stops after `max_trials` trials. `kwargs` go to the tuner
    (`directory`, `project_name`, `overwrite`, ...): with `overwrite=False`
    (the default) a search in an existing directory resumes."""
    if name not in TUNERS:
        raise ValueError(f"Unknown tuner {name!r}; choose one of {sorted(TUNERS)}")
    if not isinstance(max_trials, int) or max_trials < 1:
        raise ValueError(f"`max_trials` must be a positive integer. Received: {max_trials!r}")
    if not kwargs.get("overwrite", False):
        # KerasTuner's defaults: the search resumes from directory/project_name.
        project_dir = os.path.join(str(kwargs.get("directory") or "."),
                                   kwargs.get("project_name") or "untitled_project")
        if os.path.isdir(project_dir):
            check_search_state(project_dir)
    if name == "hyperband":
        if not max_epochs or max_epochs < 2:
            raise ValueError(f"Hyperband needs `max_epochs` >= 2. Received: {max_epochs!r}")
        tuner = keras_tuner.Hyperband(hypermodel, objective=objective(), max_epochs=max_epochs,
                                      seed=seed, **kwargs)
        tuner.oracle.max_trials = max_trials
        return tuner
    return TUNERS[name](hypermodel, objective=objective(), max_trials=max_trials, seed=seed,
                        **kwargs)


def retry_trials_the_oracle_lost(oracle):
    """Queue for retry every trial whose own file says RUNNING but that the
    reloaded oracle neither runs nor retries; return their ids.

    KerasTuner starts a trial by writing its `trial.json` (RUNNING) and then
    `oracle.json`. A process killed between the two writes leaves a trial the
    reloaded oracle knows only from its file: it is not among the ongoing
    trials that KerasTuner sends for retry, so the resumed search would end
    one trial short with that trial RUNNING forever. This queues it the way
    KerasTuner queues its ongoing trials. A worker's oracle client holds no
    state (the chief's oracle does), so it is left alone."""
    retry_queue = getattr(oracle, "_retry_queue", None)
    if retry_queue is None:
        return []
    ongoing = {trial.trial_id for trial in oracle.ongoing_trials.values()}
    lost = [trial_id for trial_id, trial in sorted(oracle.trials.items())
            if trial.status == keras_tuner.engine.trial.TrialStatus.RUNNING
            and trial_id not in retry_queue and trial_id not in ongoing]
    for trial_id in lost:
        retry_queue.append(trial_id)
        if trial_id not in oracle.start_order:
            oracle.start_order.append(trial_id)
    return lost


_kerastuner_oracle_reload = keras_tuner.Oracle.reload


@functools.wraps(_kerastuner_oracle_reload)
def _reload_and_retry_lost_trials(self):
    _kerastuner_oracle_reload(self)
    retry_trials_the_oracle_lost(self)


# Every KerasTuner oracle (random, Bayesian, Hyperband, grid and user
# subclasses that call `super().reload()`) reloads through this one method,
# so tuners built without `make_tuner` resume as safely.
keras_tuner.Oracle.reload = _reload_and_retry_lost_trials


def trials_table(oracle):
    """One row per trial: id, status, every hyperparameter, the objective and
    the recorded metrics (training time, parameter counts), sorted by id."""
    rows = []
    for trial_id, trial in sorted(oracle.trials.items()):
        row = {"trial_id": trial_id, "status": trial.status}
        values = trial.hyperparameters.values
        row.update({f"hp_{k}": v for k, v in values.items()})
        row["hrf_expansion"] = values.get("hrf_expansion")
        # The norm of either branch; inactive (the plain model) means none.
        row["hrf_norm"] = values.get("hrf_norm") or values.get("norm_only") or "none"
        row[OBJECTIVE] = trial.score
        for name in trial.metrics.metrics:
            if name != OBJECTIVE:
                row[name] = trial.metrics.get_last_value(name)
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # Shown once, in the front columns, whichever branch set them.
    folded = ("hp_hrf_expansion", "hp_hrf_norm", "hp_norm_only")
    table = table.drop(columns=[c for c in folded if c in table])
    for name in ("params_training", "params_deployed", "epochs_run"):
        if name in table:
            table[name] = table[name].astype("Int64")
    first = ["trial_id", "status", "hrf_expansion", "hrf_norm",
             *sorted(c for c in table if c.startswith("hp_")),
             OBJECTIVE, "train_seconds", "params_training", "params_deployed", "epochs_run"]
    first = [c for c in first if c in table]
    return table[first + sorted(c for c in table if c not in first)]


def width_summary(table):
    """Per expansion width and norm (width 0 with `"batch"` is the BatchNorm
    alone), over completed trials: how many, best and mean validation UA, mean
    training seconds and parameters while training and deployed."""
    done = table[table["status"] == "COMPLETED"] if "status" in table else table
    if done.empty:
        return pd.DataFrame()
    summary = done.groupby(["hrf_expansion", "hrf_norm"]).agg(
        trials=(OBJECTIVE, "size"),
        best_val_ua=(OBJECTIVE, "max"),
        mean_val_ua=(OBJECTIVE, "mean"),
        mean_train_seconds=("train_seconds", "mean"),
        params_training=("params_training", "max"),
        params_deployed=("params_deployed", "max"),
    )
    return summary.reset_index()
