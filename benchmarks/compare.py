"""The lite architectures against each other and against the classic baseline,
from the runs `accuracy.py` and `baseline.py` wrote: RESULTS.md's per-corpus tables.

    python benchmarks/compare.py --corpus emodb
    python benchmarks/compare.py --corpus ravdess --normalize speaker

Trains nothing. For each architecture: its runs of one configuration and recipe
(default: `lite_plain`, the default recipe), each fold's UA, WA and macro-F1 as the
mean over the seeds it has, then the mean over folds ± the spread over folds; the
mean per seed (and on how many folds, where a seed is incomplete); paired
differences fold by fold (each fold's mean over seeds) against the baseline and
against the reference architecture, with wins/losses and a Wilcoxon signed-rank p
(6 folds or more). Prints a Markdown table and writes the numbers as JSON.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from accuracy import CONFIGS  # noqa: E402
from accuracy import CORPORA  # noqa: E402
from accuracy import HERE  # noqa: E402
from accuracy import UNSUFFIXED_EPOCHS  # noqa: E402
from accuracy import recorded_runs  # noqa: E402
from report import paired_differences  # noqa: E402
from report import write_report  # noqa: E402

from keras_hrf.recipe import Recipe  # noqa: E402

DEFAULT_EPOCHS = Recipe().epochs

MODELS = ("conformer", "convtransformer", "speechformer")
NAMES = {"conformer": "Conformer", "convtransformer": "ConvTransformer",
         "speechformer": "SpeechFormer"}
METRICS = ("ua", "wa", "macro_f1")


def load_baseline(results, corpus, normalize):
    """(folds, {metric: mean, spread and per-fold values}) of the classic
    baseline under `normalize`, from `<results>/baseline/<corpus>.json`; the
    folds are the corpus's, as the baseline ran them."""
    path = os.path.join(results, "baseline", f"{corpus}.json")
    if not os.path.isfile(path):
        sys.exit(f"error: no classic baseline at {path}; run "
                 f"`python benchmarks/baseline.py --corpus {corpus}` first")
    with open(path) as handle:
        report = json.load(handle)
    folds = [str(g) for g in report["folds"]]
    detail = {d["test_group"]: d for d in report["folds_detail"] if d["normalize"] == normalize}
    return folds, {k: {"mean": float(np.mean([detail[g][k] for g in folds])),
                       "std_over_folds": float(np.std([detail[g][k] for g in folds])),
                       "per_fold": {g: detail[g][k] for g in folds}} for k in METRICS}


def load_runs(runs_dir, prefix, model, config, recipe_suffix, folds):
    """{fold: {seed: run}} of `model`'s runs named as accuracy.py names them."""
    by_fold = {}
    for run_config, seed, group, path in recorded_runs(runs_dir, f"{prefix}{model}_",
                                                       recipe_suffix, folds):
        if run_config != config:
            continue
        with open(path) as handle:
            by_fold.setdefault(group, {})[seed] = json.load(handle)
    return by_fold


def architecture_summary(by_fold, folds):
    """Mean over folds (each fold: the mean over its seeds) and the spread."""
    measured = [g for g in folds if g in by_fold]
    per_fold = {k: {g: float(np.mean([r[k] for r in by_fold[g].values()])) for g in measured}
                for k in METRICS}
    seeds = sorted({s for g in measured for s in by_fold[g]})
    runs = [r for g in measured for r in by_fold[g].values()]
    return {
        "runs": len(runs),
        "folds_measured": measured,
        "params_deployed": runs[0].get("params_deployed") if runs else None,
        "mean_train_seconds": float(np.mean([r["train_seconds"] for r in runs])) if runs else None,
        **{k: {"mean": float(np.mean(list(per_fold[k].values()))),
               "std_over_folds": float(np.std(list(per_fold[k].values()))),
               "per_fold": per_fold[k]} for k in METRICS if runs},
        "per_seed_ua": {str(s): {"mean": float(np.mean([by_fold[g][s]["ua"] for g in measured
                                                        if s in by_fold[g]])),
                                 "folds": sum(1 for g in measured if s in by_fold[g])}
                        for s in seeds},
    }


def paired(values, reference):
    """values minus reference over their common folds (Wilcoxon from 6 folds)."""
    common = sorted(set(values) & set(reference))
    if not common:
        return None
    return paired_differences([values[g] - reference[g] for g in common], min_pairs_for_test=6)


def same_seeds_per_fold(by_fold, other_by_fold):
    """{fold: UA mean over the seeds both have} of two run sets, for each fold
    that shares a seed: a comparison of recipes on the same seeds."""
    means = ({}, {})
    for fold in sorted(set(by_fold) & set(other_by_fold)):
        seeds = sorted(set(by_fold[fold]) & set(other_by_fold[fold]))
        if seeds:
            means[0][fold] = float(np.mean([by_fold[fold][s]["ua"] for s in seeds]))
            means[1][fold] = float(np.mean([other_by_fold[fold][s]["ua"] for s in seeds]))
    return means


def paired_text(result):
    if result is None:
        return "no common folds"
    text = (f"{100 * result['mean_difference']:+.1f} points, {result['wins']}/"
            f"{result['losses']} of {result['pairs']} folds")
    return text + (f", p = {result['wilcoxon_p']:.2f}" if result["wilcoxon_p"] is not None
                   else "")


def markdown(report):
    folds = len(report["folds"])
    lines = ["| lite model | deployed params | runs | UA | WA | macro-F1 | per seed (UA) "
             "| s per run |", "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]

    def cells(summary):
        return " | ".join(f"{summary[k]['mean']:.4f} ± {summary[k]['std_over_folds']:.3f}"
                          for k in METRICS)

    for model, summary in report["architectures"].items():
        if not summary["runs"]:
            lines.append(f"| {NAMES[model]} | | 0 | not measured | | | | |")
            continue
        seeds = "; ".join(
            f"seed {s}: {v['mean']:.4f}" + ("" if v["folds"] == folds
                                            else f" ({v['folds']} of {folds} folds)")
            for s, v in summary["per_seed_ua"].items())
        lines.append(f"| {NAMES[model]} | {summary['params_deployed']:,} | {summary['runs']} | "
                     f"{cells(summary)} | {seeds} | {summary['mean_train_seconds']:.0f} |")
    baseline = report["baseline"]
    statistics = {"train": "training statistics", "speaker": "each speaker's own"}
    lines.append(f"| classic baseline ({statistics[report['normalize']]}) | 88 features | "
                 f"{folds} | {cells(baseline)} | | |")
    lines.append("")
    for model, comparisons in report["paired"].items():
        for against, result in comparisons.items():
            lines.append(f"- {NAMES[model]} against {against}, fold by fold: {paired_text(result)}")
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="emodb")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--reference", choices=MODELS, default="conformer",
                        help="the architecture the others are paired with")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="lite_plain")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--against-epochs", type=int, default=None, metavar="N",
                        help="also pair each architecture with its own runs of N epochs, "
                             "fold by fold on the seeds both have")
    parser.add_argument("--normalize", choices=["train", "speaker"], default="train")
    parser.add_argument("--results", default=os.path.join(HERE, "results"),
                        help="the folder holding accuracy/ and baseline/")
    parser.add_argument("--output", default=None,
                        help="JSON file; default: <results>/accuracy/comparison_<corpus>_<normalize>"
                             "[_e<epochs>].json (no _e for 20 epochs, the first tables' length)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    folds, baseline = load_baseline(args.results, args.corpus, args.normalize)

    corpus = CORPORA[args.corpus]
    runs_dir = os.path.join(args.results, "accuracy", corpus["output"], "runs")
    normalization = "" if args.normalize == "train" else f"_{args.normalize}norm"
    runs = {m: load_runs(runs_dir, corpus["prefix"], m, args.config,
                         f"_e{args.epochs}{normalization}", folds) for m in args.models}
    architectures = {m: architecture_summary(runs[m], folds) for m in args.models}
    comparisons = {}
    for model, summary in architectures.items():
        if not summary["runs"]:
            continue
        comparisons[model] = {"the classic baseline": paired(summary["ua"]["per_fold"],
                                                             baseline["ua"]["per_fold"])}
        if args.against_epochs:
            other = load_runs(runs_dir, corpus["prefix"], model, args.config,
                              f"_e{args.against_epochs}{normalization}", folds)
            these, those = same_seeds_per_fold(runs[model], other)
            comparisons[model][f"itself at {args.against_epochs} epochs (same seeds)"] = \
                paired(these, those)
        reference = architectures.get(args.reference)
        if model != args.reference and reference and reference["runs"]:
            comparisons[model][f"the {NAMES[args.reference]}"] = paired(
                summary["ua"]["per_fold"], reference["ua"]["per_fold"])
    report = {"corpus": args.corpus, "config": args.config, "epochs": args.epochs,
              "against_epochs": args.against_epochs,
              "normalize": args.normalize,
              "folds": folds, "architectures": architectures, "baseline": baseline,
              "paired": comparisons}
    print(markdown(report))
    # Another length of training gets its own file; as accuracy.py's summaries,
    # 20-epoch files carry no epochs in their names.
    epochs = "" if args.epochs == UNSUFFIXED_EPOCHS else f"_e{args.epochs}"
    output = args.output or os.path.join(args.results, "accuracy",
                                         f"comparison_{args.corpus}_{args.normalize}{epochs}.json")
    write_report(output, __file__, argv, **report)
    return report


if __name__ == "__main__":
    main()
