"""What the examples and benchmarks share: data options, folds, splits,
normalization, batching, and the training recipe (`keras_hrf.recipe`:
augmentation, schedule, optimizer; re-exported here).

`examples/iemocap.py` (train, merge, export), `examples/tune_expansion.py`
(KerasTuner) and `benchmarks/accuracy.py` read data, cut folds and train the
same way through this module, so a tuned setting or a benchmarked number
carries over to the training run unchanged.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

import keras
import numpy as np

from keras_hrf import datasets
from keras_hrf import features as feature_lib
from keras_hrf.atomic import atomic_path
from keras_hrf.datasets.demo import DEMO_NOTICE
from keras_hrf.datasets.demo import make_demo_corpus
from keras_hrf.models import Conformer
from keras_hrf.models import ConvTransformer
from keras_hrf.models import SpeechFormer
from keras_hrf.recipe import DEFAULT_LEARNING_RATES  # noqa: F401 - re-exported
from keras_hrf.recipe import LARGE_LEARNING_RATES  # noqa: F401 - re-exported
from keras_hrf.recipe import RECIPE_ARGUMENTS  # noqa: F401
from keras_hrf.recipe import Recipe  # noqa: F401
from keras_hrf.recipe import add_recipe_arguments  # noqa: F401
from keras_hrf.recipe import compile_for_training  # noqa: F401
from keras_hrf.recipe import default_learning_rate  # noqa: F401
from keras_hrf.recipe import default_learning_rates_text  # noqa: F401
from keras_hrf.recipe import recipe_from_args  # noqa: F401

MODELS = {
    "conformer": Conformer,
    "convtransformer": ConvTransformer,
    "speechformer": SpeechFormer,
}



def model_class(name):
    """The model class for a `--model` name, with an error that lists the names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}") from None


def add_data_arguments(parser):
    """`--iemocap-root`, `--data-dir` (+ `--speaker-pattern`), `--manifest`
    (none of them selects the embedded synthetic demo corpus), and
    `--normalize`."""
    data = parser.add_argument_group("data (none of them: the embedded synthetic demo corpus)")
    source = data.add_mutually_exclusive_group()
    source.add_argument("--iemocap-root", metavar="PATH",
                        help="IEMOCAP_full_release folder (4-class protocol, session folds)")
    source.add_argument("--data-dir", metavar="DIR",
                        help="one sub-folder of audio files per class")
    source.add_argument("--manifest", metavar="CSV",
                        help="CSV with path,label[,start,end,speaker,group,split]")
    data.add_argument("--speaker-pattern", metavar="REGEX",
                      help="with --data-dir: regex whose first group in a file name is the "
                      "speaker (the fold unit)")
    data.add_argument("--stream-features", action="store_true",
                      help="keep the log-Mel features on disk (the output's feature_cache) "
                      "and read them batch by batch, a few batches ahead in background "
                      "threads: for corpora whose features do not fit in memory")
    data.add_argument("--length-window", type=_positive_int, default=None, metavar="BATCHES",
                      help="group utterances of similar length into training batches (less "
                      "padding): sort windows of this many shuffled batches by length. Off by "
                      "default, as benchmarks/RESULTS.md measured the recipe")
    data.add_argument("--normalize", choices=NORMALIZATIONS, default="train",
                      help="feature standardization: the training rows' statistics, or each "
                      "speaker's own (transductive: needs unlabeled audio of every test "
                      "speaker; see training.prepare_fold)")
    return data


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, received {text}")
    return value


# Batches prepared ahead in background threads when features stream from disk.
STREAM_READ_AHEAD = 4


def batch_options(args, part):
    """`FoldData.batches` options for one part ("train", "validation",
    "test") from `--stream-features`, `--length-window` and `--distribute`
    (`args.data_parallel`: the replicas and this process's share)."""
    options = {"read_ahead": STREAM_READ_AHEAD if args.stream_features else 0}
    if part == "train":
        options["length_window"] = args.length_window
    if getattr(args, "data_parallel", None) is not None:
        options.update(args.data_parallel.batch_options(part))
    return options


def check_data_arguments(parser, args):
    if args.speaker_pattern and not args.data_dir:
        parser.error("--speaker-pattern goes with --data-dir")


def run_settings(args, names):
    """The arguments `names` of a run and the Keras backend: what a resumed run
    must repeat."""
    settings = {name: getattr(args, name) for name in names}
    settings["backend"] = keras.backend.backend()
    return settings


# Settings added after run_settings.json files were already being written, with
# the value the runs that did not record them used: such a run still resumes.
SETTINGS_BEFORE_RECORDED = {"normalize": "train", "length_window": None}


def check_run_settings(output, settings):
    """Refuse to mix two runs' settings in one output folder: raise SystemExit
    listing what differs from `output/run_settings.json`, if it exists."""
    path = os.path.join(output, "run_settings.json")
    if not os.path.isfile(path):
        return
    with open(path) as handle:
        previous = json.load(handle)
    for name, value in SETTINGS_BEFORE_RECORDED.items():
        previous.setdefault(name, value)
    changed = [f"{name}: {previous.get(name)!r} then, {value!r} now"
               for name, value in settings.items() if previous.get(name) != value]
    if changed:
        raise SystemExit(
            f"--output {output} holds a run made with other settings ("
            + "; ".join(changed) + "). Resume it with the same settings, or choose "
            "another --output."
        )


def write_run_settings(output, settings):
    with atomic_path(os.path.join(output, "run_settings.json")) as path:
        with open(path, "w") as handle:
            json.dump(settings, handle, indent=2)


def data_description(args):
    return args.iemocap_root or args.data_dir or args.manifest or "demo (synthetic)"


def load_data(args, demo_root, seed=0):
    """The manifest the data arguments select, and whether it is the demo corpus.

    Raises `DatasetError` naming the path when a data option points nowhere."""
    if args.iemocap_root:
        return datasets.load_iemocap(args.iemocap_root), False
    if args.data_dir:
        return datasets.from_folder(args.data_dir, speaker_pattern=args.speaker_pattern), False
    if args.manifest:
        return datasets.read_manifest(args.manifest), False
    print(DEMO_NOTICE)
    return make_demo_corpus(demo_root, clips_per_class=24, speakers=4, seed=seed), True


def extract_features(manifest, cache_dir, in_memory=True):
    """Cached log-Mel features of every row; unreadable clips are printed and
    returned, never dropped silently. `in_memory=False` leaves them in
    `cache_dir`, read per batch (`features.OnDiskFeatures`).

    Returns:
        `(features, usable, skipped)`: features per row (None where skipped),
        the usable row indices and `(row, path, message)` for each skipped row.
    """
    extractor = feature_lib.FeatureExtractor(cache_dir=cache_dir)
    features, skipped = extractor.extract(manifest, in_memory=in_memory)
    for _, path, message in skipped:
        print(f"Skipped {path}: {message}")
    if skipped:
        print(f"Skipped {len(skipped)} of {len(manifest)} clips")
    usable = [i for i, f in enumerate(features) if f is not None]
    if not usable:
        raise datasets.DatasetError("No clip of the data could be read (see the messages above)")
    return features, usable, skipped


def official_test_groups(manifest):
    """The groups a corpus' official split tests on: those whose rows are all
    `split == "test"`, when other rows are `"train"` (MSP-Podcast's Test1 and
    Test2, M3ED's test shows, DAIC-WOZ's test participants). Empty for a
    corpus without official splits."""
    if "split" not in manifest or not (manifest["split"] == "train").any():
        return []
    split_of = manifest.groupby("group")["split"].agg(lambda s: set(s))
    return sorted(g for g, splits in split_of.items() if g and splits == {"test"})


def split_folds(requested):
    """`--folds` as a list of items: a string or a list of strings (`--folds 1 2`),
    each of which may hold several, separated by commas (`--folds 1,2`). Not by
    spaces: a group named from a folder may hold one."""
    if isinstance(requested, str):
        requested = [requested]
    return [item.strip() for part in requested for item in str(part).split(",")
            if item.strip()]


def choose_folds(manifest, requested, synthetic):
    """The test groups to run: "all", group names or 1-based numbers (a list, or
    a comma-separated string: `--folds 1 2` and `--folds 1,2` mean the same), or
    None (all; the first group only for the demo). Where the corpus has official
    splits, "all" is its test groups (`official_test_groups`); others can still
    be named."""
    groups = sorted(g for g in manifest["group"].unique() if g)
    if len(groups) < 2:
        raise datasets.DatasetError(
            "Cross-validation needs at least two groups (sessions or speakers) in the "
            f"manifest's `group` column; found {groups}. For --data-dir, give "
            "--speaker-pattern."
        )
    if requested is None:
        requested = groups[0] if synthetic else "all"
    items = split_folds(requested)
    if items == ["all"]:
        return official_test_groups(manifest) or groups
    chosen = []
    for item in items:
        if item in groups:
            chosen.append(item)
        elif item.isdigit() and 1 <= int(item) <= len(groups):
            chosen.append(groups[int(item) - 1])
        else:
            raise datasets.DatasetError(f"--folds: unknown group {item!r}; the groups are {groups}")
    return chosen


# Split names that mean validation: the manifest's "val", DAIC-WOZ's "dev".
VALIDATION_SPLITS = ("val", "dev")


def split_rows(manifest, test_group, usable, seed):
    """Test: the rows of `test_group`. Validation: 10 % of the other rows,
    stratified by class (for checkpoint selection and tuning). Training: the rest.

    Where `test_group` is one of the corpus' official test groups
    (`official_test_groups`), its official protocol instead: training = the
    `"train"` rows, validation = the `"val"` (or `"dev"`) rows (if there are
    none, 10 % of the training rows), and the other test groups' rows unused."""
    rng = np.random.default_rng(seed)
    test = [i for i in usable if manifest["group"].iat[i] == test_group]
    rest = [i for i in usable if manifest["group"].iat[i] != test_group]
    if test_group in official_test_groups(manifest):
        split = manifest["split"]
        rest = [i for i in usable if split.iat[i] == "train"]
        official_validation = [i for i in usable if split.iat[i] in VALIDATION_SPLITS]
        if official_validation:
            return rest, official_validation, test
    validation = []
    for label in sorted(set(manifest["label"].iloc[rest])):
        rows = [i for i in rest if manifest["label"].iat[i] == label]
        rng.shuffle(rows)
        validation += rows[: max(1, len(rows) // 10)]
    train = sorted(set(rest) - set(validation))
    return train, sorted(validation), test


@dataclasses.dataclass
class FoldData:
    """One fold's normalized features and integer labels."""

    test_group: str
    classes: list
    rows: dict  # "train" / "validation" / "test" -> manifest row indices
    inputs: dict  # same keys -> features.FeatureView: (frames, bins) arrays, made when read
    labels: dict  # same keys -> int32 arrays
    mean: np.ndarray  # the training rows' statistics
    std: np.ndarray
    normalization: str = "train"  # "speaker": then each speaker's own (prepare_fold)

    @property
    def input_dim(self):
        return int(self.mean.shape[-1])

    def steps_per_epoch(self, batch_size):
        """Training batches per epoch (the last one filled up when shuffled)."""
        return -(-len(self.inputs["train"]) // batch_size)

    def batches(self, part, batch_size, shuffle=False, seed=0, batch_multiple=1,
                length_window=None, read_ahead=0, process_index=0, process_count=1):
        """One part ("train", "validation", "test") as `PaddedBatches`, in the
        form `fit` / `evaluate` / `predict` take on this backend
        (`PaddedBatches.for_keras`: on TensorFlow, a `tf.data.Dataset` whose
        time axis is variable). The batches shuffle themselves when `shuffle`:
        give `fit` `shuffle=False`. `batch_multiple`: the data-parallel
        replicas (`keras_hrf.distribute.DataParallel.num_replicas`).
        `length_window` (with `shuffle`), `read_ahead` and the process share:
        see `PaddedBatches` (`training.batch_options` gives a script's)."""
        return self.padded_batches(part, batch_size, shuffle, seed, batch_multiple,
                                   length_window, read_ahead, process_index,
                                   process_count).for_keras()

    def padded_batches(self, part, batch_size, shuffle=False, seed=0, batch_multiple=1,
                       length_window=None, read_ahead=0, process_index=0, process_count=1):
        """`batches` as the `PaddedBatches` object itself (for
        `padding_fraction()`, say)."""
        return feature_lib.PaddedBatches(self.inputs[part], self.labels[part], batch_size,
                                         shuffle=shuffle, seed=seed,
                                         batch_multiple=batch_multiple,
                                         length_window=length_window, read_ahead=read_ahead,
                                         process_index=process_index,
                                         process_count=process_count)


NORMALIZATIONS = ("train", "speaker")


def prepare_fold(manifest, classes, features, test_group, usable, seed, max_seconds,
                 normalize="train"):
    """Split, check, normalize and cut utterances to `max_seconds`.

    `normalize="train"` standardizes every utterance with the per-bin mean and
    standard deviation of the training rows. `"speaker"` then standardizes each
    speaker's utterances (the manifest's `speaker` column) with that speaker's
    own statistics: a training speaker's training and validation rows
    together, a test speaker's test rows (their audio, not their labels). It
    removes much of what differs between voices and microphones (on EmoDB,
    +0.09 UA; benchmarks/RESULTS.md) but is transductive: a deployed model
    needs some unlabeled audio of each speaker to standardize with
    (`features.fit_normalization` over it, then `features.normalize`).

    Raises:
        DatasetError: when a class has no training example in this fold, or
            `normalize="speaker"` meets a row with no speaker.
        ValueError: for an unknown `normalize`.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize={normalize!r}; choose one of {list(NORMALIZATIONS)}")
    labels = np.array([classes.index(label) for label in manifest["label"]], dtype=np.int32)
    train, validation, test = split_rows(manifest, test_group, usable, seed)
    trained_classes = {classes[i] for i in labels[train]}
    missing = [c for c in classes if c not in trained_classes]
    if missing:
        raise datasets.DatasetError(
            f"Fold {test_group}: the training rows hold no example of {missing}"
        )
    absent = sorted(set(classes) - {classes[i] for i in labels[test]})
    if absent:
        print(f"Fold {test_group}: no test example of {absent}; UA and macro-F1 leave them out")
    # Read one utterance at a time: `features` may be on disk (OnDiskFeatures).
    mean, std = feature_lib.fit_normalization(features[i] for i in train)
    max_frames = int(round(max_seconds * 100))
    parts = {"train": train, "validation": validation, "test": test}
    fold = FoldData(
        test_group=test_group,
        classes=list(classes),
        rows=parts,
        inputs={
            name: feature_lib.FeatureView(features, rows, mean, std, max_frames)
            for name, rows in parts.items()
        },
        labels={name: labels[rows] for name, rows in parts.items()},
        mean=mean,
        std=std,
        normalization=normalize,
    )
    if normalize == "speaker":
        _standardize_each_speaker(fold, manifest)
    return fold


def _standardize_each_speaker(fold, manifest):
    """Standardize each speaker's (already normalized, cut) utterances with
    that speaker's own statistics: affine, so the same as standardizing their
    raw features."""
    speakers = manifest["speaker"].fillna("").astype(str).str.strip()
    unknown = [row for rows in fold.rows.values() for row in rows if not speakers.iat[row]]
    if unknown:
        raise datasets.DatasetError(
            f"normalize='speaker' needs every utterance's speaker; {len(unknown)} have none, "
            f"the first {manifest['path'].iat[unknown[0]]} (row {unknown[0]}). Give the "
            "manifest a speaker column, or --speaker-pattern with --data-dir.")
    places_by_speaker = {}
    for part, rows in fold.rows.items():
        for position, row in enumerate(rows):
            places_by_speaker.setdefault(speakers.iat[row], []).append((part, position))
    for places in places_by_speaker.values():
        mean, std = feature_lib.fit_normalization(fold.inputs[part][i] for part, i in places)
        for part, i in places:
            fold.inputs[part].affine[i] = (mean, std)


def build_model(name, num_classes, input_dim, recipe, **model_kwargs):
    """The `--model` named `name` for training with `recipe` (its SpecAugment
    included), seeded by the caller's `keras.utils.set_random_seed`."""
    return model_class(name)(num_classes, input_dim=input_dim,
                             spec_augment=recipe.spec_augment_options(), **model_kwargs)


def fit_verbosity():
    """A live progress bar on a terminal, one line per epoch in a log file."""
    return 1 if sys.stdout.isatty() else 2


def demo_root(output):
    return os.path.join(output, "demo_corpus")


class BestWeightsCheckpoint(keras.callbacks.Callback):
    """Keep the weights of the epoch with the best `monitor` value, written
    atomically, and remember that value on disk so that a resumed run (with
    `keras.callbacks.BackupAndRestore`) only replaces them with better ones.

    `keras.callbacks.ModelCheckpoint` writes in place and forgets its best
    value when the process dies, so after a resume its first epoch would
    overwrite better weights. Place this callback before `BackupAndRestore`.

    Args:
        filepath: The `.weights.h5` file.
        monitor: A logged metric, e.g. `"val_ua"`.
        mode: `"max"` or `"min"`.
        resume: Start from the value stored beside `filepath` (when both exist).
    """

    def __init__(self, filepath, monitor="val_ua", mode="max", resume=False):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', received {mode!r}")
        self.filepath = os.fspath(filepath)
        self.score_path = self.filepath + ".json"
        self.monitor = monitor
        self.mode = mode
        self.best = None
        self.best_epoch = None
        if resume and os.path.isfile(self.filepath) and os.path.isfile(self.score_path):
            with open(self.score_path) as handle:
                stored = json.load(handle)
            if stored.get("monitor") == monitor:
                self.best, self.best_epoch = stored["value"], stored["epoch"]

    def _improved(self, value):
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise KeyError(
                f"BestWeightsCheckpoint: {self.monitor!r} is not among the logged metrics "
                f"{sorted(logs)}"
            )
        value = float(logs[self.monitor])
        if not self._improved(value):
            return
        with atomic_path(self.filepath) as path:
            self.model.save_weights(path)
        with atomic_path(self.score_path) as path:
            with open(path, "w") as handle:
                json.dump({"monitor": self.monitor, "value": value, "epoch": epoch + 1}, handle)
        self.best, self.best_epoch = value, epoch + 1


class EpochLog(keras.callbacks.Callback):
    """Every epoch's logs and seconds, kept in a JSON file rewritten
    atomically after each epoch, so that a run resumed with
    `keras.callbacks.BackupAndRestore` still reports its whole history
    (`History` sees only its own `fit` call's epochs).

    Place it before `BackupAndRestore`: an epoch logged but not yet backed up
    when the process died is trained again and its entry replaced, so the log
    never misses an epoch. `resumed_at` lists the epochs (1-based) at which a
    resumed `fit` started; a resumed run reshuffles and redraws its
    augmentation from the start, so it is a different draw of the same recipe.

    Args:
        filepath: The `.json` file.
        resume: Start from the entries stored in `filepath` (when it exists).
    """

    def __init__(self, filepath, resume=False):
        super().__init__()
        self.filepath = os.fspath(filepath)
        self.entries = []
        self.resumed_at = []
        if resume and os.path.isfile(self.filepath):
            with open(self.filepath) as handle:
                stored = json.load(handle)
            self.entries, self.resumed_at = stored["epochs"], stored["resumed_at"]
        self._first_epoch_of_fit = True
        self._started = None

    def on_train_begin(self, logs=None):
        self._first_epoch_of_fit = True

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch_of_fit:
            self._first_epoch_of_fit = False
            if epoch > 0:
                self.resumed_at.append(epoch + 1)
            # Entries past the restored epoch are trained again.
            self.entries = [entry for entry in self.entries if entry["epoch"] <= epoch]
        self._started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        entry = {"epoch": epoch + 1, "seconds": round(time.time() - self._started, 2)}
        entry.update({name: float(value) for name, value in (logs or {}).items()})
        self.entries.append(entry)  # later entries were dropped when this fit began
        with atomic_path(self.filepath) as path:
            with open(path, "w") as handle:
                json.dump({"epochs": self.entries, "resumed_at": self.resumed_at}, handle)

    @property
    def seconds(self):
        """The logged epochs' training time, all processes together."""
        return sum(entry["seconds"] for entry in self.entries)

    def history(self, names):
        """`{name: [value per epoch]}` for the logged `names`, like `History.history`."""
        return {name: [entry[name] for entry in self.entries] for name in names
                if self.entries and all(name in entry for entry in self.entries)}
