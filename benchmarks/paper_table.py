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
(the large model has a recipe of its own); `--suffix MODEL:CONFIG=SUFFIX` gives
one architecture's configuration its own (the large SpeechFormer's options). Below
the table: each configuration's run differences from lite pooled over the
architectures (per corpus and over both; the architectures share test folds, so
that p is optimistic), and each lite configuration against the large model on
the same runs ("comparable": within 1 point or better). Prints Markdown and
writes the numbers as JSON.
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
# The claims' two comparisons: against the lite model, and against the large
# one ("comparable to large models": within LARGE_MARGIN or better).
LARGE = "large_plain"
REFERENCES = (REFERENCE, LARGE)
LARGE_MARGIN = 0.01
CORPORA_NAMES = {"emodb": "EmoDB", "ravdess": "RAVDESS"}
CONFIG_NAMES = {"lite_plain": "lite", "lite_hrf4": "lite + HRF r=4", "lite_hrf2": "lite + HRF r=2",
                "lite_hrf8": "lite + HRF r=8",
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


def paired(by_fold, reference_by_fold):
    """Paired UA differences over runs and over speaker groups, each kept with
    its summary so that they can be pooled over cells."""
    result = {}
    for name, differences in (("runs", paired_runs(by_fold, reference_by_fold)),
                              ("groups", paired_groups(by_fold, reference_by_fold))):
        result[name] = (dict(paired_differences(differences, MIN_PAIRS_FOR_TEST),
                             differences=differences) if differences else None)
    return result


def cell(runs_dir, prefix, model, config, suffix, folds, seeds, references):
    """One configuration's summary on one corpus, paired with each reference
    (`{name: by_fold}`) that has runs and is not the configuration itself."""
    by_fold = load_runs(runs_dir, prefix, model, config, suffix, folds)
    summary = architecture_summary(by_fold, folds)
    missing = [(g, s) for g in folds for s in seeds if s not in by_fold.get(g, {})]
    summary.update(suffix=suffix, planned_runs=len(folds) * len(seeds),
                   missing_planned_runs=len(missing), partial=bool(missing))
    for name, reference_by_fold in references.items():
        if config != name and summary["runs"] and reference_by_fold:
            summary[f"paired_vs_{name}"] = paired(by_fold, reference_by_fold)
    return summary


def paired_over_runs(summary, reference):
    """A cell's comparison with `reference` over runs, or None where it has none."""
    return (summary.get(f"paired_vs_{reference}") or {}).get("runs")


def pooled(table, corpora, models, configs, reference):
    """Each configuration's run differences from `reference`, pooled over the
    architectures: per corpus and over both. The architectures share their
    test folds, so the pooled pairs are not independent and p is optimistic."""
    result = {}
    for config in configs:
        per_corpus = {}
        for corpus in corpora:
            differences = [d for model in models
                           for d in (paired_over_runs(table[corpus][model][config], reference)
                                     or {}).get("differences", [])]
            if differences:
                per_corpus[corpus] = differences
        if len(per_corpus) > 1:
            per_corpus["all"] = [d for differences in per_corpus.values() for d in differences]
        if per_corpus:
            result[config] = {name: paired_differences(differences, MIN_PAIRS_FOR_TEST)
                              for name, differences in per_corpus.items()}
    return result


def pooled_markdown(pooled_results, reference):
    lines = [f"| against {CONFIG_NAMES.get(reference, reference)}, pooled over architectures "
             "| corpus | run pairs | mean (points) | wins/ties/losses | Wilcoxon p |",
             "| --- | --- | ---: | ---: | --- | ---: |"]
    for config, by_corpus in pooled_results.items():
        for corpus, result in by_corpus.items():
            p = result["wilcoxon_p"]
            lines.append(
                f"| {CONFIG_NAMES.get(config, config)} | {CORPORA_NAMES.get(corpus, corpus)} |"
                f" {result['pairs']} | {100 * result['mean_difference']:+.1f} |"
                f" {result['wins']}/{result['ties']}/{result['losses']} |"
                f" {'' if p is None else f'{p:.3f}'} |")
    return "\n".join(lines)


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


def large_markdown(report):
    """Each lite configuration against its architecture's large model, paired
    over runs: comparable when it is within LARGE_MARGIN of it or better."""
    corpora = report["corpora"]
    lines = ["| against the large model | " + " | ".join(
        CORPORA_NAMES.get(c, c) for c in corpora) + " |",
        "| --- |" + " --- |" * len(corpora)]
    for model in report["models"]:
        for config in report["configs"]:
            if config == LARGE:
                continue
            texts = []
            for corpus in corpora:
                runs = paired_over_runs(report["table"][corpus][model][config], LARGE)
                if runs is None:
                    texts.append("")
                    continue
                verdict = ("comparable" if runs["mean_difference"] >= -LARGE_MARGIN
                           else "not comparable")
                texts.append(f"{100 * runs['mean_difference']:+.1f} ({runs['wins']}/"
                             f"{runs['losses']} runs): {verdict}")
            if any(texts):
                lines.append(f"| {NAMES[model]}, {CONFIG_NAMES.get(config, config)} | "
                             + " | ".join(texts) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _suffix(text):
    """`CONFIG=SUFFIX` or `MODEL:CONFIG=SUFFIX`, keyed as written before the `=`."""
    key, _, suffix = text.partition("=")
    model, _, config = key.rpartition(":")
    if (config not in CONFIGS or (model and model not in MODELS)
            or not suffix.startswith("_e")):
        raise argparse.ArgumentTypeError(
            f"expected [MODEL:]CONFIG=_e<epochs>[tag] with MODEL one of {list(MODELS)} and "
            f"CONFIG one of {sorted(CONFIGS)}, received {text!r}")
    return key, suffix


def suffix_for(suffixes, model, config, default):
    """The runs' suffix of `model`'s `config`: its own, the configuration's, or
    `default` (the table's recipe)."""
    return suffixes.get(f"{model}:{config}", suffixes.get(config, default))


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
                        metavar="[MODEL:]CONFIG=SUFFIX",
                        help="a configuration's own recipe, the whole suffix after its name "
                             "(`large_plain=_e60_lr0.0003`), for every architecture or, with "
                             "MODEL:, one (`speechformer:large_plain=_e40_lr0.0003_headdropout0`); "
                             "repeatable")
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
    table, folds_of, baselines = {}, {}, {}
    for corpus in args.corpora:
        folds, baselines[corpus] = load_baseline(args.results, corpus, normalize)
        folds_of[corpus] = folds
        runs_dir = os.path.join(args.results, "accuracy", CORPORA[corpus]["output"], "runs")
        prefix = CORPORA[corpus]["prefix"]
        table[corpus] = {}
        default = f"_e{args.epochs}{args.tag}"
        for model in args.models:
            references = {
                name: load_runs(runs_dir, prefix, model, name,
                                suffix_for(args.suffix, model, name, default), folds)
                for name in REFERENCES}
            table[corpus][model] = {
                config: cell(runs_dir, prefix, model, config,
                             suffix_for(args.suffix, model, config, default), folds,
                             args.seeds, references)
                for config in args.configs}
    report = {"corpora": args.corpora, "models": args.models, "configs": args.configs,
              "seeds_planned": args.seeds, "epochs": args.epochs, "tag": args.tag,
              "suffixes": args.suffix, "normalize": normalize, "folds": folds_of,
              "baselines": baselines, "table": table}
    report["partial"] = any(c["partial"] for corpus in table.values()
                            for model in corpus.values() for c in model.values())
    report["pooled"] = {name: pooled(table, args.corpora, args.models, args.configs, name)
                        for name in REFERENCES}
    print(markdown(report))
    for name in REFERENCES:
        if report["pooled"][name]:
            print("\n" + pooled_markdown(report["pooled"][name], name))
    against_large = large_markdown(report)
    if against_large:
        print(f"\n{against_large}\n\nComparable: within {100 * LARGE_MARGIN:.0f} point of "
              "the large model's UA on the same runs, or better.")
    if report["partial"]:
        print("\nPartial: cells marked so have fewer runs than planned "
              f"(seeds {args.seeds} x every fold).")
    output = args.output or os.path.join(args.results, "accuracy",
                                         f"paper_table_e{args.epochs}{args.tag}.json")
    write_report(output, __file__, argv, **report)
    return report


if __name__ == "__main__":
    main()
