"""Does HRF help on real speech? Speaker-independent cross-validation on any corpus.

Corpora (`--corpus`): EmoDB, leave-one-speaker-out (10 folds); RAVDESS speech,
4 speaker-disjoint folds of 6 actors (3 men, 3 women; fold = ((actor - 1) // 2)
mod 4 + 1); or any manifest CSV (`--manifest`) whose `group` column gives the
folds. Several seeds. Each run trains on the other folds (10 % of their
utterances, stratified, for choosing the best epoch by validation UA), tests
on the held-out one, and for HRF runs tests the merged model
(`keras_hrf.reparameterize`), which must score exactly as the HRF model did.
Configurations (`--configs`):

    lite_plain      the lite model, no HRF (the baseline)
    lite_hrf2       HRF r = 2, merged for testing
    lite_hrf4       HRF r = 4
    lite_hrf8       HRF r = 8 (the widest of the paper's search space)
    lite_hrf4_bn    HRF r = 4 with BatchNorm in the expansion (expansion_norm="batch")
    lite_hrf1_bn    HRF r = 1 with BatchNorm: lite_bn with its square expansion trained
    lite_hrf4_all   HRF r = 4 on the FFNs, attention and convolution projections
    lite_bn         the control for lite_hrf4_bn: BatchNorm before each FFN's first
                    Dense and no expansion (an HRF r = 1 layer whose expansion
                    kernel is frozen at the identity), merged like HRF
    large_plain     the large model, no HRF

The recipe is the package's (`keras_hrf.recipe`, the same flags as
`examples/iemocap.py`): 80 log-Mel bins normalized with the training speakers'
statistics (`--normalize speaker`: each speaker's own), SpecAugment in the
model, AdamW with a linear warm-up and cosine decay (weight decay 0.05), batch
16, 40 epochs, utterances cut to 7.5 s. A changed recipe's runs and summary
carry the change in their file names (`..._lr0.0003_seed0_fold03.json`,
`summary_e40_lr0.0003.json`), so recipes never mix. Run names always carry
their epochs; summaries carry them unless they are 20, the first tables'
length (`summary.json` is 20 epochs, `summary_e40.json` the default). (EmoDB runs before 2026-12-01
cut at 4 s, which changes nothing there: every EmoDB clip lasts 2 s; they
applied the same SpecAugment masks to the batches in NumPy.)

Every run is saved as its own JSON file under --output/runs/ (EmoDB:
results/accuracy/, other corpora: results/accuracy/<corpus>/), and runs
already there are skipped, so the benchmark can be stopped and continued; a
run stopped mid-training continues from its last finished epoch
(`BackupAndRestore` in --output/scratch/<run>/, which stays until the run
finishes), with its best weights and every epoch's logs (its file lists the
epochs it resumed at, `resumed_at`, and its `train_seconds` add up all its
processes' epochs). A resumed run reshuffles and redraws its augmentation from
the start, so it is another draw of the same recipe, not a replay. A
run being trained is claimed by a `<run>.json.claim` file (host, process
id and boot id), so several processes, on one machine or on machines sharing
the folder, can work through the same plan: on a 2-core CPU two processes of
`--threads 1` train 1.3x more runs per hour than one process on both cores. A
claim left by a process that died on this host, or before this host
restarted, is taken over. The summary (mean and spread of UA, WA and
macro-F1 per configuration, and a paired comparison of each configuration
against lite_plain, and of lite_hrf4_bn and lite_hrf1_bn against lite_bn, on
the same folds and seeds) is printed and written to
--output/summary.json, with the planned runs that are not on disk listed in
it. It covers every run of the recipe on disk (all configurations and seeds,
the chosen folds), not only the command's own plan, so a narrower command
never shrinks it. Without --learning-rate each configuration trains at the
examples' default for its size (`keras_hrf.recipe`): the lite ones at 1e-3,
large_plain at 3e-4, whose runs and summary are named `_lr0.0003`
(`--learning-rate 1e-3` gives the large model the lite recipe's rate).

    python benchmarks/accuracy.py                      # EmoDB, 10 folds x 3 seeds x all configs
    python benchmarks/accuracy.py --corpus ravdess --configs lite_plain --seeds 0
    python benchmarks/accuracy.py --manifest my.csv    # any corpus with a group column
    python benchmarks/accuracy.py --quick              # 2 folds, 1 seed, plain vs HRF r=4, 3 epochs
    python benchmarks/accuracy.py --threads 1 & python benchmarks/accuracy.py --threads 1
    python benchmarks/accuracy.py --summarize-only     # the summary of what is on disk
    python benchmarks/accuracy.py --configs lite_plain --seeds 0 --learning-rate 3e-4
"""

import argparse
import dataclasses
import json
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import machine  # noqa: E402
from report import paired_differences  # noqa: E402
from report import write_report  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED_DATA = os.path.join(HERE, os.pardir, os.pardir, "shared", "data")
# Where each corpus is, and how its runs are kept: EmoDB's at the top of
# results/accuracy/ with bare names, as they were before other corpora.
CORPORA = {
    "emodb": dict(root=os.path.join(SHARED_DATA, "emodb"), output="", prefix=""),
    "ravdess": dict(root=os.path.join(SHARED_DATA, "ravdess"), output="ravdess",
                    prefix="ravdess_"),
}

# Summaries and comparisons of this many epochs carry no epochs in their file
# names: the first tables' length, the recipe's default until 2026-12-02.
UNSUFFIXED_EPOCHS = 20

CONFIGS = {
    "lite_plain": dict(size="lite", hrf_expansion=None),
    "lite_hrf2": dict(size="lite", hrf_expansion=2.0),
    "lite_hrf4": dict(size="lite", hrf_expansion=4.0),
    "lite_hrf8": dict(size="lite", hrf_expansion=8.0),
    "lite_hrf4_bn": dict(size="lite", hrf_expansion=4.0, hrf_norm="batch"),
    "lite_hrf1_bn": dict(size="lite", hrf_expansion=1.0, hrf_norm="batch"),
    "lite_hrf4_all": dict(size="lite", hrf_expansion=4.0,
                          hrf_targets=("ffn", "attention", "conv")),
    "lite_bn": dict(size="lite", hrf_expansion=1.0, hrf_norm="batch",
                    identity_expansion=True),
    "large_plain": dict(size="large", hrf_expansion=None),
}
BASELINE = "lite_plain"
# What a configuration is also compared with, pair by pair: the run that isolates
# one of its ingredients.
CONTROLS = {"lite_hrf4_bn": "lite_bn", "lite_hrf1_bn": "lite_bn"}


def freeze_expansions_at_identity(model):
    """Turn every r = 1 `HRFDense` into `Dense(BatchNorm(x))`: its expansion
    kernel becomes the identity and stops training, leaving only the BatchNorm
    (still folded by the merge) between the input and the Dense kernel."""
    import numpy as np

    import keras_hrf

    layers = [layer for layer in model._flatten_layers()
              if isinstance(layer, keras_hrf.HRFDense)]
    if not layers:
        raise ValueError("identity_expansion needs HRFDense layers; the model has none")
    for layer in layers:
        width, expansion = layer.expansion_kernel.shape
        if width != expansion:
            raise ValueError(f"{layer.name}: an identity expansion needs a square kernel, "
                             f"got {width}x{expansion}")
        layer.expansion_kernel.assign(np.eye(width, dtype=layer.expansion_kernel.dtype))
        layer.expansion_kernel.trainable = False


def config_recipe(args, config_name):
    """The recipe `config_name` trains with: `--learning-rate`, or the package's
    default rate for the model at the configuration's size (the examples' own)."""
    rate = args.recipe.peak_learning_rate(args.model, CONFIGS[config_name]["size"])
    return dataclasses.replace(args.recipe, learning_rate=rate)


def recipe_tag(args, config_name):
    """How `config_name`'s recipe differs from the default, for its runs' file
    names ("" for the default recipe, so that earlier runs keep their names).
    The rate is named against the lite model's: the large models' default rate
    came later, and their runs at it were already named `_lr0.0003`."""
    from keras_hrf import training

    default = training.Recipe()
    tag = ""
    learning_rate = config_recipe(args, config_name).learning_rate
    if learning_rate != training.default_learning_rate(args.model):
        tag += f"_lr{learning_rate:g}"
    if args.dropout is not None:
        tag += f"_dropout{args.dropout:g}"
    if args.normalize != "train":
        tag += f"_{args.normalize}norm"
    if args.optimizer != default.optimizer:
        tag += f"_{args.optimizer}"
        if args.optimizer == "sgd" and args.momentum != default.momentum:
            tag += f"_momentum{args.momentum:g}"
    if args.weight_decay != default.weight_decay:
        tag += f"_wd{args.weight_decay:g}"
    if args.clipnorm is not None:
        tag += f"_clip{args.clipnorm:g}"
    if not args.spec_augment:
        tag += "_nospecaug"
    if args.max_seconds != default.max_seconds:
        tag += f"_max{args.max_seconds:g}s"
    for name, value in sorted(args.model_options.items()):
        tag += f"_{name.replace('_', '')}{_file_name_value(value)}"
    return tag


def _file_name_value(value):
    """A model option's value in a file name: sequences as `1-1-1-1`, no
    spaces or brackets (`layers_per_stage=[1,1,1,1]`)."""
    if isinstance(value, (list, tuple)):
        return "-".join(_file_name_value(item) for item in value)
    return str(value)


def prepare_fold(manifest, classes, features, usable, seed, test_group, args):
    """The fold's split, normalized as the recipe says (`--normalize`)."""
    from keras_hrf import training

    return training.prepare_fold(manifest, classes, features, test_group, usable, seed,
                                 args.max_seconds, normalize=args.normalize)


def model_arguments(config_name, args):
    """The model's constructor arguments: the configuration's, with the recipe's
    dropout (`--dropout`) and the architecture options (`--model-option`)."""
    config = {k: v for k, v in CONFIGS[config_name].items() if k != "identity_expansion"}
    if args.dropout is not None:
        config["dropout"] = args.dropout
    config.update(getattr(args, "model_options", {}))
    return config


def run_one(manifest, classes, features, usable, config_name, seed, test_group, args,
            run_name, extra_callbacks=()):
    import keras
    import numpy as np

    import keras_hrf
    from keras_hrf import training
    from keras_hrf.metrics import classification_report

    fold = prepare_fold(manifest, classes, features, usable, seed, test_group, args)
    keras.utils.set_random_seed(seed)
    config = model_arguments(config_name, args)
    recipe = config_recipe(args, config_name)
    model = training.build_model(args.model, len(classes), fold.input_dim, recipe, **config)
    if CONFIGS[config_name].get("identity_expansion"):
        freeze_expansions_at_identity(model)
    training.compile_for_training(model, len(classes), recipe,
                                  fold.steps_per_epoch(args.batch_size), model_name=args.model)
    train = fold.batches("train", args.batch_size, shuffle=True, seed=seed)
    validation = fold.batches("validation", args.batch_size)
    # One folder per run (its file's name): runs of other models or recipes on the
    # same fold, trained side by side, must not share a checkpoint.
    scratch = os.path.join(args.output, "scratch", run_name)
    # A run killed after an epoch (a session's end, a stopped lane) resumes
    # from its last finished epoch; the two callbacks before the backup keep
    # the best weights and every epoch's logs across processes.
    backup = os.path.join(scratch, "backup")
    resuming = os.path.isdir(backup)
    checkpoint = training.BestWeightsCheckpoint(os.path.join(scratch, "best.weights.h5"),
                                                resume=resuming)
    epoch_log = training.EpochLog(os.path.join(scratch, "epochs.json"), resume=resuming)
    if resuming:
        print(f"{run_name}: resuming from {backup} ({len(epoch_log.entries)} epochs logged)",
              flush=True)
    model.fit(train, validation_data=validation, epochs=args.epochs, shuffle=False, verbose=0,
              callbacks=[checkpoint, epoch_log,
                         keras.callbacks.BackupAndRestore(backup, double_checkpoint=True),
                         *extra_callbacks])
    model.load_weights(checkpoint.filepath)
    test_batches = keras_hrf.features.PaddedBatches(fold.inputs["test"],
                                                    batch_size=args.batch_size).for_keras()
    logits = model.predict(test_batches, verbose=0)
    result = {
        "config": config_name, "seed": seed, "test_group": test_group, "corpus": args.corpus,
        "model": args.model, "epochs": args.epochs, "backend": keras.backend.backend(),
        "learning_rate": recipe.learning_rate, "dropout": args.dropout,
        "normalize": args.normalize, "recipe": dataclasses.asdict(recipe),
        "model_options": args.model_options,
        # The epochs' time, over every process that trained them (`resumed_at`).
        "train_seconds": round(epoch_log.seconds, 1), "resumed_at": epoch_log.resumed_at,
        "best_epoch": checkpoint.best_epoch,
        "best_val_ua": checkpoint.best, "params_training": model.count_params(),
        "params_trainable": sum(int(np.prod(v.shape)) for v in model.trainable_variables),
        "test_rows": len(fold.inputs["test"]),
        # Per epoch: training loss, accuracy and UA, and validation UA (how it learned).
        "history": {name: [round(v, 4) for v in values] for name, values in
                    epoch_log.history(("loss", "accuracy", "ua", "val_ua")).items()},
    }
    # Every run is tested merged: the deployed model, without HRF or SpecAugment.
    merged = keras_hrf.reparameterize(model)
    merged_logits = merged.predict(test_batches, verbose=0)
    result["max_abs_logit_difference"] = float(np.max(np.abs(merged_logits - logits)))
    result["params_deployed"] = merged.count_params()
    if not np.array_equal(merged_logits.argmax(-1), logits.argmax(-1)):
        raise SystemExit(f"{config_name} seed {seed} fold {test_group}: merged predictions "
                         "differ from the trained model's")
    report = classification_report(fold.labels["test"], merged_logits.argmax(-1), classes)
    result.update(ua=report["ua"], wa=report["wa"], macro_f1=report["macro_f1"])
    keras.backend.clear_session()
    return result


def claim(path):
    """Claim the run whose result goes to `path` for this process; False if
    another live process holds it. The claim is `path + ".claim"`, created
    exclusively, holding host, process id and boot id. A claim whose process
    is gone from this host, or that an earlier boot of this host wrote, is
    taken over: after a restart a process id may name an unrelated process."""
    claim_path = path + ".claim"
    this_host, this_boot = socket.gethostname(), _boot_id()
    owner = f"{this_host} {os.getpid()} {this_boot}"
    for _ in range(2):
        try:
            handle = os.open(claim_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                with open(claim_path) as existing:
                    host, pid, *boot = existing.read().split()
                pid = int(pid)
            except (OSError, ValueError):
                return False  # being written by its owner just now
            if host != this_host:
                return False  # another host's process cannot be checked from here
            earlier_boot = bool(boot) and boot[0] != this_boot
            if not earlier_boot and _process_alive(pid):
                return False
            os.remove(claim_path)  # its process is gone: take it over
            continue
        with os.fdopen(handle, "w") as claimed:
            claimed.write(owner)
        return True
    return False


def _boot_id():
    """This boot's id on Linux, "-" where the system has none to read."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip() or "-"
    except OSError:
        return "-"


def recorded_runs(runs_dir, prefix, recipe_suffix, folds):
    """(config, seed, test speaker, path) of each run file in `runs_dir` named
    `<prefix><config><recipe_suffix>_seed<seed>_fold<speaker>.json` for a speaker
    in `folds`, in CONFIGS order, then seed, then speaker. The suffix ends with
    the recipe tag, so runs of another recipe never match."""
    pattern = re.compile(
        re.escape(prefix) + "(?P<config>" + "|".join(re.escape(c) for c in CONFIGS) + ")"
        + re.escape(recipe_suffix) + r"_seed(?P<seed>\d+)_fold(?P<group>.+)\.json")
    found = []
    for name in os.listdir(runs_dir) if os.path.isdir(runs_dir) else []:
        match = pattern.fullmatch(name)
        if match and match["group"] in folds:
            found.append((match["config"], int(match["seed"]), match["group"],
                          os.path.join(runs_dir, name)))
    order = list(CONFIGS)
    return sorted(found, key=lambda run: (order.index(run[0]), run[1], run[2]))


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _paired_ua(runs, reference_runs):
    """UA of `runs` minus UA of `reference_runs` on the same seed and test speaker."""
    reference = {(r["seed"], r["test_group"]): r for r in reference_runs}
    differences = [r["ua"] - reference[(r["seed"], r["test_group"])]["ua"] for r in runs
                   if (r["seed"], r["test_group"]) in reference]
    return paired_differences(differences) if differences else None


def summarize(results):
    """Mean and spread per configuration; paired differences against the baseline
    and, where a configuration has one (CONTROLS), against its control."""
    import numpy as np

    by_config = {}
    for r in results:
        by_config.setdefault(r["config"], []).append(r)
    summary = {}
    for name, runs in sorted(by_config.items(), key=lambda item: list(CONFIGS).index(item[0])):
        entry = {"runs": len(runs), "seeds": sorted({r["seed"] for r in runs}),
                 "folds": len({r["test_group"] for r in runs}),
                 "mean_train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
                 "params_training": runs[0]["params_training"],
                 "params_deployed": runs[0]["params_deployed"]}
        for metric in ("ua", "wa", "macro_f1"):
            values = np.array([r[metric] for r in runs])
            # Spread over seeds of the fold-averaged score (what a reader compares).
            per_seed = [np.mean([r[metric] for r in runs if r["seed"] == s]) for s in entry["seeds"]]
            entry[metric] = {"mean": float(values.mean()), "std_over_runs": float(values.std()),
                             "per_seed_mean": [float(v) for v in per_seed]}
        if name != BASELINE:
            paired = _paired_ua(runs, by_config.get(BASELINE, []))
            if paired:
                entry["paired_ua_vs_baseline"] = paired
        control = CONTROLS.get(name)
        if control:
            paired = _paired_ua(runs, by_config.get(control, []))
            if paired:
                entry["paired_ua_vs_control"] = dict(control=control, **paired)
        summary[name] = entry
    return summary


def _paired_text(paired):
    p_value = "n/a" if paired["wilcoxon_p"] is None else f"{paired['wilcoxon_p']:.3f}"
    return (f"{paired['mean_difference']:+.4f} (W/T/L {paired['wins']}/{paired['ties']}/"
            f"{paired['losses']}, p={p_value})")


def print_summary(summary):
    print(f"{'config':<15}{'runs':>5}{'UA':>16}{'WA':>16}{'macro-F1':>16}{'train s':>9}"
          f"{'  paired UA vs ' + BASELINE}")
    for name, e in summary.items():
        cells = "".join(f"{e[m]['mean']:>9.4f} ±{e[m]['std_over_runs']:.3f}" for m in
                        ("ua", "wa", "macro_f1"))
        paired = e.get("paired_ua_vs_baseline")
        paired_text = "  " + _paired_text(paired) if paired else ""
        print(f"{name:<15}{e['runs']:>5}{cells}{e['mean_train_seconds']:>9.1f}{paired_text}")
    for name, e in summary.items():
        if "paired_ua_vs_control" in e:
            paired = e["paired_ua_vs_control"]
            print(f"{name} vs its control {paired['control']}, {paired['pairs']} pairs: "
                  + _paired_text(paired))


def _set_threads(argv):
    """Apply `--threads` before Keras (and TensorFlow, which reads it when it
    starts) is imported; parse_args checks it again."""
    threads = argparse.ArgumentParser(add_help=False)
    threads.add_argument("--threads", type=int, default=None)
    known, _ = threads.parse_known_args(argv)
    if known.threads is not None and known.threads >= 1:
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(known.threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = str(known.threads)
    return known.threads


def _model_option(text):
    """`NAME=VALUE` with a Python literal value (`normalize_first=True`)."""
    import ast

    name, _, value = text.partition("=")
    if not name.isidentifier() or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, received {text!r}")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def parse_args(argv):
    from keras_hrf import training

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 folds, seed 0, lite_plain and lite_hrf4, 3 epochs")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--corpus", choices=sorted(CORPORA), default="emodb",
                      help="EmoDB (leave-one-speaker-out) or RAVDESS (4 folds of 6 actors)")
    data.add_argument("--manifest", metavar="CSV",
                      help="any corpus: a manifest CSV whose `group` column gives the folds")
    parser.add_argument("--data-root", default=None,
                        help="the corpus folder; default: ../shared/data/<corpus>")
    parser.add_argument("--emodb", dest="data_root", help=argparse.SUPPRESS)  # the old name
    parser.add_argument("--model", default="conformer",
                        choices=["conformer", "convtransformer", "speechformer"])
    parser.add_argument("--model-option", dest="model_options", type=_model_option,
                        action="append", default=[], metavar="NAME=VALUE",
                        help="an architecture argument of the model (repeatable), e.g. "
                             "normalize_first=True; named in the runs' files")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--folds", nargs="+", default=["all"],
                        help='"all" or the test groups (`1 2` or `1,2`)')
    training.add_recipe_arguments(parser)
    parser.add_argument("--dropout", type=float, default=None,
                        help="the model's dropout rate; default: the model's own (0.1)")
    parser.add_argument("--normalize", default="train", choices=list(training.NORMALIZATIONS),
                        help="feature normalization: statistics of the training speakers "
                             "(default), or each speaker's own (transductive)")
    parser.add_argument("--output", default=None,
                        help="default: results/accuracy/ (EmoDB), results/accuracy/<corpus>/")
    parser.add_argument("--summarize-only", action="store_true",
                        help="train nothing: summarize the runs of this plan already on disk "
                             "and list the missing ones")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for this process (TensorFlow and PyTorch); "
                             "default: the backend's own choice (all cores)")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.quick:
        args.configs, args.seeds, args.epochs = ["lite_plain", "lite_hrf4"], [0], 3
        args.folds = ["1", "2"]
    args.model_options = dict(args.model_options)
    args.recipe = training.recipe_from_args(parser, args)
    if args.manifest:
        args.corpus = os.path.splitext(os.path.basename(args.manifest))[0]
        corpus_output, args.prefix = args.corpus, f"{args.corpus}_"
    else:
        corpus = CORPORA[args.corpus]
        args.data_root = args.data_root or corpus["root"]
        corpus_output, args.prefix = corpus["output"], corpus["prefix"]
    if args.output is None:
        args.output = os.path.join(HERE, "results", "accuracy", corpus_output)
    return args


def load_corpus(args):
    from keras_hrf import datasets

    if args.manifest:
        return datasets.read_manifest(args.manifest)
    if args.corpus == "ravdess":
        return datasets.load_ravdess(args.data_root)
    return datasets.load_emodb(args.data_root)


def main(argv=None):
    threads = _set_threads(argv if argv is not None else sys.argv[1:])
    args = parse_args(argv)

    import keras

    if threads is not None and keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(threads)
    from keras_hrf import datasets
    from keras_hrf import training
    from keras_hrf.atomic import atomic_path

    # Each configuration's runs are named by their recipe: the lite and the
    # large sizes train at different default rates.
    tags = {config_name: recipe_tag(args, config_name) for config_name in args.configs}
    manifest = load_corpus(args)
    classes = datasets.class_names(manifest)
    folds = training.choose_folds(manifest, args.folds, synthetic=False)
    runs_dir = os.path.join(args.output, "runs")
    plan = [(c, s, g) for s in args.seeds for g in folds for c in args.configs]

    def run_path(config_name, seed, group):
        return os.path.join(runs_dir, f"{args.prefix}{args.model}_{config_name}_e{args.epochs}"
                                      f"{tags[config_name]}_seed{seed}_fold{group}.json")

    print(f"{args.corpus}: {len(manifest)} utterances, {len(classes)} classes, folds {folds}; "
          f"{len(plan)} runs; backend {keras.backend.backend()}", flush=True)
    if not args.summarize_only:
        features, usable, skipped = training.extract_features(
            manifest, os.path.join(args.output, "scratch", "feature_cache"))
        if skipped:
            raise SystemExit(f"{len(skipped)} {args.corpus} clips could not be read")
        os.makedirs(runs_dir, exist_ok=True)
    to_train = [] if args.summarize_only else plan
    for number, (config_name, seed, group) in enumerate(to_train, start=1):
        path = run_path(config_name, seed, group)
        if os.path.isfile(path) or not claim(path):
            continue
        try:
            if os.path.isfile(path):  # finished by another process meanwhile
                continue
            result = run_one(manifest, classes, features, usable, config_name, seed, group, args,
                             os.path.splitext(os.path.basename(path))[0])
            result["machine"] = machine()
            result["threads"] = args.threads
            result["date"] = time.strftime("%Y-%m-%d")
            with atomic_path(path) as temporary:
                with open(temporary, "w") as handle:
                    json.dump(result, handle, indent=2)
        finally:
            os.remove(path + ".claim")
        print(f"[{number}/{len(plan)}] {config_name} seed {seed} fold {group}: UA "
              f"{result['ua']:.4f} WA {result['wa']:.4f} F1 {result['macro_f1']:.4f} "
              f"({result['train_seconds']:.0f} s)", flush=True)
    return [summarize_recipe(args, tag, [c for c in args.configs if tags[c] == tag], plan,
                             run_path, folds, argv)
            for tag in dict.fromkeys(tags.values())]


def summarize_recipe(args, tag, config_names, plan, run_path, folds, argv):
    """Summarize every run of one recipe on disk into its summary file; the
    planned runs of `config_names` not on disk are listed as missing."""
    import keras

    # A planned run not on disk is being trained elsewhere, or --summarize-only.
    planned = [run for run in plan if run[0] in config_names]
    missing = [os.path.basename(run_path(*run)) for run in planned
               if not os.path.isfile(run_path(*run))]
    # Every run of this recipe on disk, not only this command's plan, so that a
    # narrower command does not shrink the recipe's summary.
    runs_dir = os.path.join(args.output, "runs")
    recorded = recorded_runs(runs_dir, f"{args.prefix}{args.model}_", f"_e{args.epochs}{tag}",
                             folds)
    results = []
    for _, _, _, path in recorded:
        with open(path) as handle:
            results.append(json.load(handle))
    summary = summarize(results)
    print_summary(summary)
    if missing:
        print(f"{len(missing)} of the {len(planned)} planned runs are not on disk and not in "
              f"this summary, among them {missing[0]}", flush=True)
    # Run names always carry the epochs; the summary's only when they are not
    # 20, and the model's only when it is not the Conformer, so that the files
    # written before the default moved keep their names and meaning.
    if args.epochs != UNSUFFIXED_EPOCHS:
        tag = f"_e{args.epochs}{tag}"
    if args.model != "conformer":
        tag = f"_{args.model}{tag}"
    name = f"summary{tag}_quick.json" if args.quick else f"summary{tag}.json"
    recipe = config_recipe(args, config_names[0])
    return write_report(os.path.join(args.output, name), __file__, argv,
                        backend=keras.backend.backend(), corpus=args.corpus, model=args.model,
                        epochs=args.epochs, learning_rate=recipe.learning_rate,
                        dropout=args.dropout, normalize=args.normalize,
                        recipe=dataclasses.asdict(recipe), model_options=args.model_options,
                        folds=folds, seeds=args.seeds, configs=config_names,
                        planned_runs=len(planned), missing_runs=missing,
                        summarized_runs=len(results), summary=summary)

if __name__ == "__main__":
    main()
