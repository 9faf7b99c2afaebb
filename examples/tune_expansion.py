"""Search the HRF expansion width with KerasTuner, then merge and save the winner.

    python examples/tune_expansion.py                        # embedded demo corpus
    python examples/tune_expansion.py --iemocap-root IEMOCAP_full_release \\
        --tuner bayesian --max-trials 20 --epochs 30 --output runs/tune

Width 0 (the plain model) is in the search, so the baseline gets the same
trials, data and budget as HRF; so, by default, is the foldable BatchNorm alone
before each FFN (`--hrf-norms none,batch`; `--hrf-norms none` for the paper's
space only). The objective is validation UA (10 % of the
training groups, stratified); the held-out test group (--fold) scores the
merged winner once, after the search. Writes to --output:

    trials.csv          one row per trial: id, status, hyperparameters (hrf_expansion
                        and hrf_norm first), val_ua, training seconds, parameters
                        while training and once merged
    widths.csv          per width and norm: trials, best and mean val_ua, mean
                        training seconds
    best_merged.keras   the best trial's model, reparameterized
    search_report.json  the best hyperparameters, the merged model's test metrics
    search/             KerasTuner's own project folder (oracle and trial state)

Run the same command again to resume: completed trials are kept and a trial that
was cut off is run again. Other settings on the same --output are refused.

Distributed (KerasTuner's chief/worker oracle): start one chief and any number of
workers with the same arguments and a shared --output folder, e.g. on machine A

    KERASTUNER_TUNER_ID=chief KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 \\
        python examples/tune_expansion.py --output /shared/tune
    KERASTUNER_TUNER_ID=tuner0 KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 \\
        python examples/tune_expansion.py --output /shared/tune

and more workers (tuner1, tuner2, ...) on other machines. The chief hands out
trials and, when all are done, writes the files above; workers train. A worker
that dies must be started again with the same KERASTUNER_TUNER_ID: the chief
gives it back the trial it was running. Without a shared folder the chief
retrains the best hyperparameters before merging.
"""

import argparse
import dataclasses
import json
import os
import sys
import warnings

from quiet_startup import import_keras

keras = import_keras()
import keras_tuner  # noqa: E402
import numpy as np  # noqa: E402
from keras_tuner.src.distribute import utils as distribute_utils  # noqa: E402

import keras_hrf  # noqa: E402
from keras_hrf import datasets  # noqa: E402
from keras_hrf import distribute  # noqa: E402
from keras_hrf import training  # noqa: E402
from keras_hrf import tuning  # noqa: E402
from keras_hrf.atomic import atomic_path  # noqa: E402
from keras_hrf.audio import AudioError  # noqa: E402
from keras_hrf.datasets.demo import DEMO_NOTICE  # noqa: E402
from keras_hrf.features import PaddedBatches  # noqa: E402
from keras_hrf.metrics import classification_report  # noqa: E402

RUN_SETTINGS = ("iemocap_root", "data_dir", "manifest", "speaker_pattern", "model", "size",
                "tuner", "max_trials", "epochs", "batch_size", "expansions", "hrf_targets",
                "hrf_norms", "learning_rates", "dropouts", "num_layers", "model_dim",
                "max_seconds", "fold", "seed", "normalize", "optimizer", "weight_decay",
                "momentum", "clipnorm", "spec_augment", "length_window")


def _list(kind, name):
    def parse(text):
        items = [item.strip() for item in text.split(",") if item.strip()]
        try:
            return [kind(item) for item in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: not a list of {kind.__name__}: {text!r}")

    return parse


def _norm(text):
    return None if text in ("none", "None") else text


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="KerasTuner search over the HRF expansion width (0 = the plain model); "
        "the best model is merged and saved. Resumable; distributable with KerasTuner's "
        "chief/worker oracle (see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    training.add_data_arguments(parser)
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="conformer",
                       help=f"one of {', '.join(sorted(training.MODELS))}")
    model.add_argument("--size", choices=["lite", "large"], default="lite")
    model.add_argument("--num-layers", type=int, default=None,
                       help="override the preset's number of blocks (fewer: faster trials)")
    model.add_argument("--model-dim", type=int, default=None,
                       help="override the preset's model width")
    space = parser.add_argument_group("search space (comma-separated values to try)")
    space.add_argument("--expansions", type=_list(float, "--expansions"), default=[0, 1, 2, 4, 8],
                       metavar="R,R,...", help="HRF widths as multiples of the model width; 0 = no HRF")
    space.add_argument("--hrf-targets", type=_list(str, "--hrf-targets"), default=["ffn"],
                       metavar="T,T,...", help='target sets, each like "ffn" or "ffn+attention+conv"')
    space.add_argument("--hrf-norms", type=_list(_norm, "--hrf-norms"), default=[None, "batch"],
                       metavar="N,N,...", help='"none" and/or "batch" (default: both); with 0 '
                       'among the --expansions, "batch" also tries a BatchNorm alone (no '
                       'expansion), the variant that scored best on real speech; "none" alone '
                       'searches the paper\'s HRF widths against the plain model only')
    # SUPPRESS: the default depends on --model, so the help must not print "None".
    space.add_argument("--learning-rates", type=_list(float, "--learning-rates"),
                       default=argparse.SUPPRESS,
                       metavar="LR,LR,...", help="default: the model's own rate at its size ("
                       f"{training.default_learning_rates_text()})")
    space.add_argument("--dropouts", type=_list(float, "--dropouts"), default=[0.1],
                       metavar="P,P,...")
    search = parser.add_argument_group("search")
    search.add_argument("--tuner", default="random",
                        help=f"one of {', '.join(sorted(tuning.TUNERS))}")
    search.add_argument("--max-trials", type=int, default=10)
    search.add_argument("--fold", default=None,
                        help="test group held out from the search (name or 1-based number); "
                        "default: the first")
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--distribute", action="store_true",
                        help="train each trial data-parallel over every device of this "
                        "host (JAX, TensorFlow; see keras_hrf.distribute); "
                        "--batch-size stays the global batch")
    parser.add_argument("--output", default=os.path.join("runs", "tune"), metavar="DIR")
    # --epochs: per trial (Hyperband: the most epochs of a trial); the learning
    # rate is searched (--learning-rates), so the recipe's own is left out.
    training.add_recipe_arguments(parser, epochs=10, learning_rate=False)
    args = parser.parse_args(argv)
    if args.model not in training.MODELS:
        parser.error(f"--model: unknown model {args.model!r}; choose one of {sorted(training.MODELS)}")
    if not hasattr(args, "learning_rates"):
        args.learning_rates = [training.default_learning_rate(args.model, args.size)]
    if args.tuner not in tuning.TUNERS:
        parser.error(f"--tuner: unknown tuner {args.tuner!r}; choose one of {sorted(tuning.TUNERS)}")
    for name in ("expansions", "hrf_targets", "hrf_norms", "learning_rates", "dropouts"):
        if not getattr(args, name):
            parser.error(f"--{name.replace('_', '-')}: empty search space (no value to try)")
    if args.max_trials < 1:
        parser.error("--max-trials must be positive")
    args.learning_rate = None
    args.recipe = training.recipe_from_args(parser, args)
    if args.tuner == "hyperband" and args.epochs < 2:
        parser.error("--tuner hyperband needs --epochs >= 2 (its largest trial budget)")
    training.check_data_arguments(parser, args)
    try:
        args.hypermodel_options = dict(
            model=args.model, size=args.size, expansions=args.expansions,
            hrf_targets=args.hrf_targets, hrf_norms=args.hrf_norms,
            learning_rates=args.learning_rates, dropouts=args.dropouts, recipe=args.recipe,
            model_kwargs={k: v for k, v in (("num_layers", args.num_layers),
                                            ("model_dim", args.model_dim)) if v},
        )
        tuning.HRFHyperModel(2, **args.hypermodel_options)  # checks the space now
    except ValueError as error:
        parser.error(str(error))
    args.data_parallel = None  # main() sets it up for --distribute
    return args


def role():
    """"single", "chief" or "worker", from KerasTuner's environment variables."""
    if not distribute_utils.has_chief_oracle():
        return "single"
    return "chief" if distribute_utils.is_chief_oracle() else "worker"


def best_model(tuner, fold, args):
    """The best trial's trained model; retrained from its hyperparameters when
    its checkpoint is not in this machine's --output (no shared folder)."""
    try:
        with warnings.catch_warnings():
            # The trial checkpoint holds optimizer state that inference does not need.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            return tuner.get_best_models(1)[0], False
    except (OSError, FileNotFoundError, ValueError) as error:
        print(f"Best trial's checkpoint not readable here ({error}); retraining it")
    hp = tuner.get_best_hyperparameters(1)[0]
    model = tuner.hypermodel.build(hp)
    tuner.hypermodel.fit(hp, model, fold.batches("train", args.batch_size, shuffle=True,
                                                 seed=args.seed,
                                                 **training.batch_options(args, "train")),
                         validation_data=fold.batches(
                             "validation", args.batch_size,
                             **training.batch_options(args, "validation")),
                         epochs=hp.values.get("tuner/epochs", args.epochs),
                         shuffle=False,  # the batches reshuffle themselves each epoch
                         verbose=training.fit_verbosity())
    return model, True


def _replicas(args):
    return args.data_parallel.num_replicas if args.data_parallel else 1


def write_reports(tuner, fold, args, synthetic):
    table = tuning.trials_table(tuner.oracle)
    with atomic_path(os.path.join(args.output, "trials.csv")) as path:
        table.to_csv(path, index=False)
    widths = tuning.width_summary(table)
    with atomic_path(os.path.join(args.output, "widths.csv")) as path:
        widths.to_csv(path, index=False)
    completed = table[table["status"] == "COMPLETED"]
    if completed.empty:
        raise SystemExit("No trial completed; see trials.csv and the messages above")

    model, retrained = best_model(tuner, fold, args)
    merged = keras_hrf.reparameterize(model)
    hp = tuner.get_best_hyperparameters(1)[0].values
    plain_options = {**args.hypermodel_options, "expansions": [0], "hrf_norms": [None]}
    plain = tuning.HRFHyperModel(len(fold.classes), fold.input_dim, **plain_options)
    plain_params = plain.build(keras_tuner.HyperParameters()).count_params()
    if merged.count_params() != plain_params:
        raise SystemExit(f"The merged model has {merged.count_params():,} parameters, "
                         f"the plain model {plain_params:,}")
    # Data-parallel batches repeat rows to fill every replica: keep the real ones.
    test_rows = len(fold.inputs["test"])
    batches = PaddedBatches(fold.inputs["test"], batch_size=args.batch_size,
                            batch_multiple=_replicas(args)).for_keras()
    hrf_logits = model.predict(batches, verbose=0)[:test_rows]
    merged_logits = merged.predict(batches, verbose=0)[:test_rows]
    difference = float(np.max(np.abs(hrf_logits - merged_logits)))
    with atomic_path(os.path.join(args.output, "best_merged.keras")) as path:
        merged.save(path)
    report = {
        "data": training.data_description(args),
        "synthetic": synthetic,
        "backend": keras.backend.backend(),
        "tuner": args.tuner,
        "objective": "val_ua (max)",
        "trials_completed": int(len(completed)),
        "best_hyperparameters": hp,
        "best_val_ua": float(completed["val_ua"].max()),
        "best_retrained_here": retrained,
        "params_best_while_training": model.count_params(),
        "params_merged": merged.count_params(),
        "params_plain": plain_params,
        "max_abs_logit_difference": difference,
        "test_group": fold.test_group,
        "normalization": fold.normalization,
        "test_merged": classification_report(fold.labels["test"], merged_logits.argmax(-1),
                                             fold.classes),
        "recipe": dataclasses.asdict(args.recipe),
        "widths": widths.to_dict("records"),
    }
    with atomic_path(os.path.join(args.output, "search_report.json")) as path:
        with open(path, "w") as handle:
            json.dump(report, handle, indent=2, default=str)
    print("\nPer expansion width (0 = no expansion) and norm:")
    print(widths.to_string(index=False))
    print(f"\nBest: {hp}; val UA {report['best_val_ua']:.4f}; merged test UA on "
          f"{fold.test_group}: {report['test_merged']['ua']:.4f}; parameters "
          f"{model.count_params():,} while training, {merged.count_params():,} merged "
          f"(plain {plain_params:,}); max |HRF - merged| logit difference {difference:.2e}")
    if synthetic:
        print(DEMO_NOTICE)
    print(f"Wrote {args.output}/: trials.csv, widths.csv, best_merged.keras, search_report.json")
    return report


def main(argv=None):
    args = parse_args(argv)
    with distribute.for_flag(args.distribute, args.batch_size) as args.data_parallel:
        if args.data_parallel and args.data_parallel.process_count > 1:
            raise SystemExit(
                "--distribute: the search runs on one host's devices; to spread trials over "
                "hosts, run KerasTuner's own chief and workers (KERASTUNER_TUNER_ID, "
                "KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT) instead of several JAX processes")
        return _main(args)


def _main(args):
    settings = training.run_settings(args, RUN_SETTINGS)
    training.check_run_settings(args.output, settings)
    os.makedirs(args.output, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    manifest, synthetic = training.load_data(args, training.demo_root(args.output), args.seed)
    classes = datasets.class_names(manifest)
    test_group = training.choose_folds(manifest, args.fold or "1", synthetic)[0]
    training.write_run_settings(args.output, settings)
    features, usable, _ = training.extract_features(
        manifest, os.path.join(args.output, "feature_cache"), in_memory=not args.stream_features
    )
    fold = training.prepare_fold(manifest, classes, features, test_group, usable,
                                 args.seed, args.max_seconds, normalize=args.normalize)
    print(f"{len(manifest)} utterances, classes {classes}; test group {test_group} held out; "
          f"backend {keras.backend.backend()}; {role()} process")

    hypermodel = tuning.HRFHyperModel(len(classes), fold.input_dim,
                                      steps_per_epoch=fold.steps_per_epoch(args.batch_size),
                                      data_parallel=args.data_parallel,
                                      **args.hypermodel_options)
    tuner = tuning.make_tuner(args.tuner, hypermodel, args.max_trials, max_epochs=args.epochs,
                              seed=args.seed + 1, directory=args.output, project_name="search")
    tuner.search(
        fold.batches("train", args.batch_size, shuffle=True, seed=args.seed,
                     **training.batch_options(args, "train")),
        validation_data=fold.batches("validation", args.batch_size,
                                     **training.batch_options(args, "validation")),
        epochs=args.epochs,
        shuffle=False,  # the batches reshuffle themselves each epoch
        verbose=training.fit_verbosity(),
        callbacks=[keras.callbacks.TensorBoard(os.path.join(args.output, "logs"))],
    )
    if role() == "worker":
        print(f"Worker {os.environ['KERASTUNER_TUNER_ID']}: no trial left; the chief writes "
              "the reports")
        return None
    return write_reports(tuner, fold, args, synthetic)


if __name__ == "__main__":
    try:
        main()
    except (datasets.DatasetError, AudioError) as error:
        sys.exit(f"tune_expansion.py: error: {error}")
