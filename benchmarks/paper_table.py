"""The paper's table on real speech: each architecture lite, lite + HRF, lite +
BatchNorm and large, on each corpus, from the runs `accuracy.py` wrote.

    python benchmarks/paper_table.py
    python benchmarks/paper_table.py --suffix large_plain=_e40_lr0.0003
    python benchmarks/paper_table.py --tag _sgd --models conformer --configs lite_plain lite_hrf4

Trains nothing. Rows: architecture x configuration (default `lite_plain`,
`lite_hrf4`, `lite_bn`, `large_plain`); per corpus: UA, WA and macro-F1 (each
fold's mean over the seeds it has, then the mean over folds ± the spread over
folds), the runs found and planned (`--seeds`), seconds per run, and the paired
comparison with the same architecture's `lite_plain` on the same seeds and folds:
wins/losses and the Wilcoxon signed-rank p over runs (fold x seed pairs), and over
speaker groups (each fold's mean over the seeds both have). The classic baseline
(`baseline.py`) is the reference row of each corpus. A cell with fewer runs than
planned is marked partial. Every configuration's runs are those of one recipe:
`_e<epochs><tag>` in their names, or the suffix `--suffix CONFIG=SUFFIX` gives it
(the large model has a recipe of its own). Prints Markdown and writes the numbers
as JSON.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from accuracy import CONFIGS  # noqa: E402
from accuracy import CORPORA  # noqa: E402
from accuracy import HERE  # noqa: E402
from compare import DEFAULT_EPOCHS  # noqa: E402
from compare import METRICS  # noqa: E402
from compare import MODELS  # noqa: E402
from compare import NAMES  # noqa: E402
from compare import architecture_summary  # noqa: E402
from compare import load_baseline  # noqa: E402
from compare import load_runs  # noqa: E402
from compare import same_seeds_per_fold  # noqa: E402
from report import paired_differences  # noqa: E402
from report import write_report  # noqa: E402

REFERENCE = "lite_plain"
CORPORA_NAMES = {"emodb": "EmoDB", "ravdess": "RAVDESS"}
CONFIG_NAMES = {"lite_plain": "lite", "lite_hrf4": "lite + HRF r=4", "lite_hrf2": "lite + HRF r=2",
                "lite_bn": "lite + BN", "lite_hrf4_bn": "lite + HRF r=4 + BN",
                "large_plain": "large"}
# Wilcoxon's signed-rank test from this many pairs: with fewer, even all pairs
# of one sign cannot reach p < 0.05.
MIN_PAIRS_FOR_TEST = 6


def paired_runs(by_fold, reference_by_fold):
    """UA differences over runs: one per (fold, seed) both have."""
    return [by_fold[g][s]["ua"] - reference_by_fold[g][s]["ua"]
            for g in sorted(set(by_fold) & set(reference_by_fold))
            for s in sorted(set(by_fold[g]) & set(reference_by_fold[g]))]


def paired_groups(by_fold, reference_by_fold):
    """UA differences over speaker groups: each fold's mean over the seeds both have."""
    these, those = same_seeds_per_fold(by_fold, reference_by_fold)
    return [these[g] - those[g] for g in sorted(these)]


def cell(runs_dir, prefix, model, config, suffix, folds, seeds, reference_by_fold):
    by_fold = load_runs(runs_dir, prefix, model, config, suffix, folds)
    summary = architecture_summary(by_fold, folds)
    missing = [(g, s) for g in folds for s in seeds if s not in by_fold.get(g, {})]
    summary.update(suffix=suffix, planned_runs=len(folds) * len(seeds),
                   missing_planned_runs=len(missing), partial=bool(missing))
    if config != REFERENCE and summary["runs"] and reference_by_fold:
        summary["paired_vs_lite_plain"] = {
            name: (paired_differences(differences, MIN_PAIRS_FOR_TEST) if differences else None)
            for name, differences in (("runs", paired_runs(by_fold, reference_by_fold)),
                                      ("groups", paired_groups(by_fold, reference_by_fold)))}
    return summary


def paired_text(paired):
    def one(result, unit):
        if result is None:
            return f"no common {unit}"
        text = f"{result['wins']}/{result['losses']} {unit}"
        return text + (f", p {result['wilcoxon_p']:.2f}" if result["wilcoxon_p"] is not None
                       else "")

    runs = paired["runs"]
    if runs is None:
        return "no common runs"
    return (f"{100 * runs['mean_difference']:+.1f} ({one(runs, 'runs')}; "
            f"{one(paired['groups'], 'groups')})")


def markdown(report):
    corpora = report["corpora"]
    # Deployed parameters of the first corpus's model: the classifier's width
    # follows each corpus's number of classes, so a count taken from another
    # corpus (the first has no run of that row) names its corpus.
    header = f"| model | deployed params ({CORPORA_NAMES.get(corpora[0], corpora[0])}) |" + "".join(
        f" {CORPORA_NAMES.get(c, c)} UA | WA | macro-F1 | runs | s per run | vs lite |"
        for c in corpora)
    lines = [header, "| --- | ---: |" + " ---: | ---: | ---: | ---: | ---: | --- |" * len(corpora)]
    for model in report["models"]:
        for config in report["configs"]:
            row = f"| {NAMES[model]}, {CONFIG_NAMES.get(config, config)} |"
            params = ""
            cells = ""
            for corpus in corpora:
                summary = report["table"][corpus][model][config]
                if not summary["runs"]:
                    cells += " not measured | | | 0 | | |"
                    continue
                if not params:
                    params = f"{summary['params_deployed']:,}" + (
                        "" if corpus == corpora[0] else f" ({CORPORA_NAMES.get(corpus, corpus)})")
                planned = summary["planned_runs"]
                partial = (f" (partial: {planned - summary['missing_planned_runs']} of "
                           f"{planned} planned)" if summary["partial"] else "")
                paired = summary.get("paired_vs_lite_plain")
                cells += ("".join(f" {summary[k]['mean']:.4f} ± {summary[k]['std_over_folds']:.3f} |"
                                  for k in METRICS)
                          + f" {summary['runs']}{partial} |"
                          f" {summary['mean_train_seconds']:.0f} |"
                          f" {paired_text(paired) if paired else ''} |")
            lines.append(row + f" {params} |" + cells)
    baseline = "| classic baseline (eGeMAPS + linear SVM) | 88 features |"
    for corpus in corpora:
        b = report["baselines"][corpus]
        baseline += "".join(f" {b[k]['mean']:.4f} ± {b[k]['std_over_folds']:.3f} |"
                            for k in METRICS) + f" {len(report['folds'][corpus])} folds | | |"
    lines.append(baseline)
    return "\n".join(lines)


def _suffix(text):
    config, _, suffix = text.partition("=")
    if config not in CONFIGS or not suffix.startswith("_e"):
        raise argparse.ArgumentTypeError(
            f"expected CONFIG=_e<epochs>[tag] with CONFIG one of {sorted(CONFIGS)}, "
            f"received {text!r}")
    return config, suffix


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", choices=sorted(CORPORA),
                        default=["emodb", "ravdess"])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS),
                        default=["lite_plain", "lite_hrf4", "lite_bn", "large_plain"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="the seeds planned per cell: fewer runs make a cell partial")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--tag", default="",
                        help="the recipe tag in the runs' names, as accuracy.py writes it "
                             "(`_sgd`, `_lr0.0003`, `_speakernorm`); default: the default recipe")
    parser.add_argument("--suffix", type=_suffix, action="append", default=[],
                        metavar="CONFIG=SUFFIX",
                        help="a configuration's own recipe, the whole suffix after its name "
                             "(`large_plain=_e60_lr0.0003`); repeatable")
    parser.add_argument("--results", default=os.path.join(HERE, "results"),
                        help="the folder holding accuracy/ and baseline/")
    parser.add_argument("--output", default=None,
                        help="JSON file; default: <results>/accuracy/paper_table_e<epochs><tag>.json")
    args = parser.parse_args(argv)
    if args.tag and not args.tag.startswith("_"):
        parser.error(f"--tag must start with '_' as in the runs' names, received {args.tag!r}")
    args.suffix = dict(args.suffix)
    return args


def main(argv=None):
    args = parse_args(argv)
    normalize = "speaker" if "_speakernorm" in args.tag else "train"
    reference_suffix = args.suffix.get(REFERENCE, f"_e{args.epochs}{args.tag}")
    table, folds_of, baselines = {}, {}, {}
    for corpus in args.corpora:
        folds, baselines[corpus] = load_baseline(args.results, corpus, normalize)
        folds_of[corpus] = folds
        runs_dir = os.path.join(args.results, "accuracy", CORPORA[corpus]["output"], "runs")
        prefix = CORPORA[corpus]["prefix"]
        table[corpus] = {}
        for model in args.models:
            reference = load_runs(runs_dir, prefix, model, REFERENCE, reference_suffix, folds)
            table[corpus][model] = {
                config: cell(runs_dir, prefix, model, config,
                             args.suffix.get(config, f"_e{args.epochs}{args.tag}"), folds,
                             args.seeds, reference)
                for config in args.configs}
    report = {"corpora": args.corpora, "models": args.models, "configs": args.configs,
              "seeds_planned": args.seeds, "epochs": args.epochs, "tag": args.tag,
              "suffixes": args.suffix, "normalize": normalize, "folds": folds_of,
              "baselines": baselines, "table": table}
    report["partial"] = any(c["partial"] for corpus in table.values()
                            for model in corpus.values() for c in model.values())
    print(markdown(report))
    if report["partial"]:
        print("\nPartial: cells marked so have fewer runs than planned "
              f"(seeds {args.seeds} x every fold).")
    output = args.output or os.path.join(args.results, "accuracy",
                                         f"paper_table_e{args.epochs}{args.tag}.json")
    write_report(output, __file__, argv, **report)
    return report


if __name__ == "__main__":
    main()
