"""Does HRF help on real speech? Leave-one-speaker-out on EmoDB.

Speaker-independent, 10 folds (one per EmoDB speaker), several seeds. Each run
trains on nine speakers (10 % of their utterances, stratified, for choosing the
best epoch by validation UA), tests on the tenth, and for HRF runs tests the
merged model (`keras_hrf.reparameterize`), which must score exactly as the HRF
model did. Configurations (`--configs`):

    lite_plain      the lite model, no HRF (the baseline)
    lite_hrf2       HRF r = 2, merged for testing
    lite_hrf4       HRF r = 4
    lite_hrf4_bn    HRF r = 4 with BatchNorm in the expansion (expansion_norm="batch")
    lite_hrf1_bn    HRF r = 1 with BatchNorm: lite_bn with its square expansion trained
    lite_hrf4_all   HRF r = 4 on the FFNs, attention and convolution projections
    lite_bn         the control for lite_hrf4_bn: BatchNorm before each FFN's first
                    Dense and no expansion (an HRF r = 1 layer whose expansion
                    kernel is frozen at the identity), merged like HRF
    large_plain     the large model, no HRF

The recipe (the same for every configuration): 80 log-Mel bins normalized with
the training speakers' statistics, SpecAugment (two frequency masks of up to 8
bins, two time masks of up to 5 % of the frames) on training batches, AdamW with
a linear warm-up and cosine decay (weight decay 0.05), batch 16, 20 epochs,
utterances cut to 4 s. For tuning it, `--learning-rate`, `--dropout`,
`--epochs` and `--normalize speaker` (each speaker's features normalized with
that speaker's own statistics) change it; a changed recipe's runs and summary
carry the change in their file names (`..._lr0.0003_seed0_fold03.json`,
`summary_lr0.0003.json`), so recipes never mix.

Every run is saved as its own JSON file under --output/runs/, and runs already
there are skipped, so the benchmark can be stopped and continued. A run being
trained is claimed by a `<run>.json.claim` file (host and process id), so
several processes, on one machine or on machines sharing the folder, can work
through the same plan: on a 2-core CPU two processes of `--threads 1` train
1.3x more runs per hour than one process on both cores. A claim left by a
process that died on this host is taken over. The summary (mean and spread of
UA, WA and macro-F1 per configuration, and a paired comparison of each
configuration against lite_plain, and of lite_hrf4_bn and lite_hrf1_bn against
lite_bn, on the same folds and seeds) is printed and written to
--output/summary.json, with the planned runs that are not on disk listed in it.
It covers every run of the recipe on disk (all configurations and seeds, the
chosen folds), not only the command's own plan, so a narrower command never
shrinks it.

    python benchmarks/accuracy.py                      # 10 folds x 3 seeds x all configs
    python benchmarks/accuracy.py --quick              # 2 folds, 1 seed, plain vs HRF r=4, 3 epochs
    python benchmarks/accuracy.py --configs lite_plain lite_hrf4 --seeds 0
    python benchmarks/accuracy.py --threads 1 & python benchmarks/accuracy.py --threads 1
    python benchmarks/accuracy.py --summarize-only     # the summary of what is on disk
    python benchmarks/accuracy.py --configs lite_plain --seeds 0 --learning-rate 3e-4
"""

import argparse
import json
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import machine  # noqa: E402
from report import write_report  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_EMODB = os.path.join(HERE, os.pardir, os.pardir, "shared", "data", "emodb")

CONFIGS = {
    "lite_plain": dict(size="lite", hrf_expansion=None),
    "lite_hrf2": dict(size="lite", hrf_expansion=2.0),
    "lite_hrf4": dict(size="lite", hrf_expansion=4.0),
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


def spec_augment_batches(inputs, labels, batch_size, seed):
    """Shuffled `PaddedBatches` whose training batches get SpecAugment masks
    (zeroed bins and frames of the normalized features; padding stays padding)."""
    import numpy as np

    from keras_hrf.features import PaddedBatches

    class SpecAugmented(PaddedBatches):
        def __getitem__(self, index):
            x, y = super().__getitem__(index)
            x = x.copy()
            rng = np.random.default_rng([seed, self.epoch, index])
            for row in range(len(x)):
                frames = int(np.sum(np.any(x[row] != 0.0, axis=-1)))
                for _ in range(2):
                    width = rng.integers(0, 9)
                    start = rng.integers(0, x.shape[-1] - width + 1)
                    x[row, :frames, start:start + width] = 0.0  # the normalized mean
                for _ in range(2):
                    width = rng.integers(0, max(1, int(0.05 * frames)) + 1)
                    start = rng.integers(0, max(1, frames - width + 1))
                    # Not 0: a frame of zeros would read as padding.
                    x[row, start:start + width] = 1e-3
            return x, y

        def on_epoch_end(self):
            super().on_epoch_end()
            self.epoch += 1

    augmented = SpecAugmented(inputs, labels, batch_size, shuffle=True, seed=seed)
    augmented.epoch = 0
    return augmented


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


def recipe_tag(args, default_learning_rate):
    """How a run's recipe differs from the default, for its file name ("" for
    the default recipe, so that earlier runs keep their names)."""
    tag = ""
    if args.learning_rate != default_learning_rate:
        tag += f"_lr{args.learning_rate:g}"
    if args.dropout is not None:
        tag += f"_dropout{args.dropout:g}"
    if args.normalize != "train":
        tag += f"_{args.normalize}norm"
    return tag


def prepare_fold(manifest, classes, features, usable, seed, test_group, args):
    """The fold's split, normalized as the recipe says (`--normalize`)."""
    from keras_hrf import training

    return training.prepare_fold(manifest, classes, features, test_group, usable, seed,
                                 args.max_seconds, normalize=args.normalize)


def model_arguments(config_name, args):
    """The model's constructor arguments: the configuration's, with the recipe's
    dropout (`--dropout`) where it sets one."""
    config = {k: v for k, v in CONFIGS[config_name].items() if k != "identity_expansion"}
    if args.dropout is not None:
        config["dropout"] = args.dropout
    return config


def run_one(manifest, classes, features, usable, config_name, seed, test_group, args):
    import keras
    import numpy as np

    import keras_hrf
    from keras_hrf import training
    from keras_hrf.metrics import classification_report

    fold = prepare_fold(manifest, classes, features, usable, seed, test_group, args)
    keras.utils.set_random_seed(seed)
    config = model_arguments(config_name, args)
    model = training.model_class(args.model)(len(classes), input_dim=fold.input_dim, **config)
    if CONFIGS[config_name].get("identity_expansion"):
        freeze_expansions_at_identity(model)
    train = spec_augment_batches(fold.inputs["train"], fold.labels["train"], args.batch_size,
                                 seed)
    steps = args.epochs * len(train)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=steps - min(steps // 10, 200), warmup_target=args.learning_rate,
        warmup_steps=min(steps // 10, 200), alpha=0.01,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras_hrf.metrics.UnweightedAccuracy(len(classes))],
        jit_compile=False if keras.backend.backend() == "tensorflow" else "auto",
    )
    validation = fold.batches("validation", args.batch_size)
    scratch = os.path.join(args.output, "scratch", f"{config_name}_{seed}_{test_group}")
    checkpoint = training.BestWeightsCheckpoint(os.path.join(scratch, "best.weights.h5"))
    started = time.time()
    model.fit(train.for_keras(), validation_data=validation, epochs=args.epochs, shuffle=False,
              verbose=0, callbacks=[checkpoint])
    seconds = time.time() - started
    model.load_weights(checkpoint.filepath)
    test_batches = keras_hrf.features.PaddedBatches(fold.inputs["test"],
                                                    batch_size=args.batch_size).for_keras()
    logits = model.predict(test_batches, verbose=0)
    result = {
        "config": config_name, "seed": seed, "test_group": test_group,
        "model": args.model, "epochs": args.epochs, "backend": keras.backend.backend(),
        "learning_rate": args.learning_rate, "dropout": args.dropout,
        "normalize": args.normalize,
        "train_seconds": round(seconds, 1), "best_epoch": checkpoint.best_epoch,
        "best_val_ua": checkpoint.best, "params_training": model.count_params(),
        "params_trainable": sum(int(np.prod(v.shape)) for v in model.trainable_variables),
        "test_rows": len(fold.inputs["test"]),
    }
    if config.get("hrf_expansion"):
        merged = keras_hrf.reparameterize(model)
        merged_logits = merged.predict(test_batches, verbose=0)
        result["max_abs_logit_difference"] = float(np.max(np.abs(merged_logits - logits)))
        result["params_deployed"] = merged.count_params()
        if not np.array_equal(merged_logits.argmax(-1), logits.argmax(-1)):
            raise SystemExit(f"{config_name} seed {seed} fold {test_group}: merged predictions "
                             "differ from the HRF model's")
        logits = merged_logits
    else:
        result["params_deployed"] = model.count_params()
    report = classification_report(fold.labels["test"], logits.argmax(-1), classes)
    result.update(ua=report["ua"], wa=report["wa"], macro_f1=report["macro_f1"])
    keras.backend.clear_session()
    return result


def claim(path):
    """Claim the run whose result goes to `path` for this process; False if
    another live process holds it. The claim is `path + ".claim"`, created
    exclusively; one whose process is gone from this host is taken over."""
    claim_path = path + ".claim"
    owner = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            handle = os.open(claim_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                with open(claim_path) as existing:
                    host, pid = existing.read().split()
            except (OSError, ValueError):
                return False  # being written by its owner just now
            if host != socket.gethostname() or _process_alive(int(pid)):
                return False
            os.remove(claim_path)  # its process died: take it over
            continue
        with os.fdopen(handle, "w") as claimed:
            claimed.write(owner)
        return True
    return False


def recorded_runs(runs_dir, prefix, recipe_suffix, folds):
    """(config, seed, test speaker) of each run file in `runs_dir` named
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
            found.append((match["config"], int(match["seed"]), match["group"]))
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
    import numpy as np
    from scipy import stats

    reference = {(r["seed"], r["test_group"]): r for r in reference_runs}
    pairs = [(r["ua"], reference[(r["seed"], r["test_group"])]["ua"]) for r in runs
             if (r["seed"], r["test_group"]) in reference]
    if not pairs:
        return None
    differences = np.array([a - b for a, b in pairs])
    test = (stats.wilcoxon(differences) if np.any(differences != 0) and len(pairs) > 1
            else None)
    return {
        "pairs": len(pairs), "mean_difference": float(differences.mean()),
        "std_difference": float(differences.std()),
        "wins": int(np.sum(differences > 0)), "ties": int(np.sum(differences == 0)),
        "losses": int(np.sum(differences < 0)),
        "wilcoxon_p": float(test.pvalue) if test is not None else None,
    }


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 folds, seed 0, lite_plain and lite_hrf4, 3 epochs")
    parser.add_argument("--emodb", default=DEFAULT_EMODB, help="the EmoDB folder")
    parser.add_argument("--model", default="conformer",
                        choices=["conformer", "convtransformer", "speechformer"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--folds", default="all", help='"all" or comma-separated speakers')
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="peak AdamW rate; default: the model's (training.default_learning_rate)")
    parser.add_argument("--dropout", type=float, default=None,
                        help="the model's dropout rate; default: the model's own (0.1)")
    parser.add_argument("--normalize", default="train", choices=["train", "speaker"],
                        help="feature normalization: statistics of the training speakers "
                             "(default), or each speaker's own (transductive)")
    parser.add_argument("--max-seconds", type=float, default=4.0)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "accuracy"))
    parser.add_argument("--summarize-only", action="store_true",
                        help="train nothing: summarize the runs of this plan already on disk "
                             "and list the missing ones")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for this process (TensorFlow and PyTorch); "
                             "default: the backend's own choice (all cores)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be at least 1, got {args.threads}")
        # Read by TensorFlow when it starts, so set before keras is imported.
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(args.threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = str(args.threads)
    if args.quick:
        args.configs, args.seeds, args.epochs = ["lite_plain", "lite_hrf4"], [0], 3
        args.folds = "1,2"

    import keras

    if args.threads is not None and keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(args.threads)
    from keras_hrf import datasets
    from keras_hrf import training
    from keras_hrf.atomic import atomic_path

    default_learning_rate = training.default_learning_rate(args.model)
    if args.learning_rate is None:
        args.learning_rate = default_learning_rate
    tag = recipe_tag(args, default_learning_rate)
    manifest = datasets.load_emodb(args.emodb)
    classes = datasets.class_names(manifest)
    folds = training.choose_folds(manifest, args.folds, synthetic=False)
    runs_dir = os.path.join(args.output, "runs")
    plan = [(c, s, g) for s in args.seeds for g in folds for c in args.configs]

    def run_path(config_name, seed, group):
        return os.path.join(runs_dir, f"{args.model}_{config_name}_e{args.epochs}{tag}_seed{seed}"
                                      f"_fold{group}.json")

    print(f"EmoDB: {len(manifest)} utterances, {len(classes)} classes, folds {folds}; "
          f"{len(plan)} runs; backend {keras.backend.backend()}", flush=True)
    if not args.summarize_only:
        features, usable, skipped = training.extract_features(
            manifest, os.path.join(args.output, "scratch", "feature_cache"))
        if skipped:
            raise SystemExit(f"{len(skipped)} EmoDB clips could not be read")
        os.makedirs(runs_dir, exist_ok=True)
    to_train = [] if args.summarize_only else plan
    for number, (config_name, seed, group) in enumerate(to_train, start=1):
        path = run_path(config_name, seed, group)
        if os.path.isfile(path) or not claim(path):
            continue
        try:
            if os.path.isfile(path):  # finished by another process meanwhile
                continue
            result = run_one(manifest, classes, features, usable, config_name, seed, group, args)
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

    # A planned run not on disk is being trained elsewhere, or --summarize-only.
    missing = [os.path.basename(run_path(*run)) for run in plan
               if not os.path.isfile(run_path(*run))]
    # Every run of this recipe on disk, not only this command's plan, so that a
    # narrower command does not shrink the recipe's summary.
    recorded = recorded_runs(runs_dir, f"{args.model}_", f"_e{args.epochs}{tag}", folds)
    results = []
    for run in recorded:
        with open(run_path(*run)) as handle:
            results.append(json.load(handle))
    summary = summarize(results)
    print_summary(summary)
    if missing:
        print(f"{len(missing)} of the {len(plan)} planned runs are not on disk and not in "
              f"this summary, among them {missing[0]}", flush=True)
    # Run names always carry the epochs; the summary's only when they are not the default.
    if args.epochs != parser.get_default("epochs"):
        tag = f"_e{args.epochs}{tag}"
    name = f"summary{tag}_quick.json" if args.quick else f"summary{tag}.json"
    return write_report(os.path.join(args.output, name), __file__, argv,
                        backend=keras.backend.backend(), model=args.model, epochs=args.epochs,
                        learning_rate=args.learning_rate, dropout=args.dropout,
                        normalize=args.normalize,
                        folds=folds, seeds=args.seeds, configs=args.configs,
                        planned_runs=len(plan), missing_runs=missing,
                        summarized_runs=len(results), summary=summary)


if __name__ == "__main__":
    main()
