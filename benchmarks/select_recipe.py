"""Choose a configuration's recipe by validation only: the candidates' runs on
the tuning folds, ranked by their validation UA, their test UA never looked at.

    # train the candidates on fold 1 (its other folds are the training data):
    python benchmarks/accuracy.py --corpus ravdess --configs large_plain --seeds 0 --folds 1 --learning-rate 3e-4
    python benchmarks/accuracy.py --corpus ravdess --configs large_plain --seeds 0 --folds 1 --epochs 60 --learning-rate 3e-4
    # rank them:
    python benchmarks/select_recipe.py --corpus ravdess --config large_plain \\
        --candidates _e40 _e40_lr0.0003 _e60_lr0.0003

Trains nothing. A candidate is the suffix `accuracy.py` gives its runs
(`_e<epochs>` and the recipe tag). Each run chose its best epoch by UA on the
validation rows (10 % of the training folds, stratified); a candidate scores
the mean over its runs of that best validation UA and, less optimistic for long
recipes, of the mean validation UA over its last five epochs. The ranking uses
the first (`--by best` or `--by last5`); the test folds' scores are kept out of
the printout and the JSON, so choosing cannot peek at them. Use the chosen
suffix with `paper_table.py --suffix CONFIG=SUFFIX`.
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
from accuracy import recorded_runs  # noqa: E402
from compare import MODELS  # noqa: E402
from keras_hrf.training import split_folds  # noqa: E402
from report import write_report  # noqa: E402

LAST_EPOCHS = 5


def candidate_score(paths):
    """Validation scores of one candidate's runs (never their test scores)."""
    best, last = [], []
    for path in paths:
        with open(path) as handle:
            run = json.load(handle)
        best.append(run["best_val_ua"])
        # Runs before 2026-12-01 kept no per-epoch history.
        if "val_ua" in run.get("history", {}):
            last.append(float(np.mean(run["history"]["val_ua"][-LAST_EPOCHS:])))
    return {"runs": len(paths), "best": float(np.mean(best)) if paths else None,
            "last5": float(np.mean(last)) if paths and len(last) == len(paths) else None,
            "run_files": [os.path.basename(p) for p in paths]}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="ravdess")
    parser.add_argument("--model", choices=MODELS, default="conformer")
    parser.add_argument("--config", choices=list(CONFIGS), required=True)
    parser.add_argument("--candidates", nargs="+", required=True, metavar="SUFFIX",
                        help="the candidates' run-name suffixes, `_e<epochs>[tag]`")
    parser.add_argument("--folds", nargs="+", default=["1"],
                        help="the tuning folds (`1 2` or `1,2`; default: 1); report the "
                             "chosen recipe's table on all folds, knowing these were seen")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="the seeds compared (default: 0), the same for every candidate")
    parser.add_argument("--by", choices=["best", "last5"], default="best")
    parser.add_argument("--results", default=os.path.join(HERE, "results"))
    parser.add_argument("--output", default=None,
                        help="default: <results>/accuracy/[<corpus>/]selection_<model>_<config>.json")
    args = parser.parse_args(argv)
    for suffix in args.candidates:
        if not suffix.startswith("_e"):
            parser.error(f"a candidate is a run-name suffix `_e<epochs>[tag]`, received {suffix!r}")
    return args


def main(argv=None):
    args = parse_args(argv)
    corpus = CORPORA[args.corpus]
    accuracy_dir = os.path.join(args.results, "accuracy", corpus["output"])
    runs_dir = os.path.join(accuracy_dir, "runs")
    folds = split_folds(args.folds)
    scores = {}
    for suffix in args.candidates:
        paths = [path for config, seed, _, path in
                 recorded_runs(runs_dir, f"{corpus['prefix']}{args.model}_", suffix, folds)
                 if config == args.config and seed in args.seeds]
        scores[suffix] = candidate_score(paths)
    measured = {s: v for s, v in scores.items() if v["runs"]}
    missing = [s for s, v in scores.items() if not v["runs"]]
    if not measured:
        sys.exit(f"error: no runs of {args.model} {args.config} on folds {folds} in {runs_dir} "
                 f"for the candidates {args.candidates}; train them with accuracy.py first")
    unscored = [s for s, v in measured.items() if v[args.by] is None]
    if unscored:
        sys.exit(f"error: --by {args.by}: the runs of {unscored} keep no per-epoch validation "
                 "history; rank by --by best")
    chosen = max(measured, key=lambda s: measured[s][args.by])
    print(f"{args.model} {args.config} on {args.corpus}, tuning folds {folds}, by {args.by} "
          "validation UA:")
    for suffix, score in sorted(measured.items(), key=lambda item: -item[1][args.by]):
        mark = "  <- chosen" if suffix == chosen else ""
        last = "n/a" if score["last5"] is None else f"{score['last5']:.4f}"
        print(f"  {suffix:<30} runs {score['runs']}  best {score['best']:.4f}  "
              f"last {LAST_EPOCHS} epochs {last}{mark}")
    for suffix in missing:
        print(f"  {suffix:<30} no runs yet")
    output = args.output or os.path.join(accuracy_dir,
                                         f"selection_{args.model}_{args.config}.json")
    return write_report(output, __file__, argv, corpus=args.corpus, model=args.model,
                        config=args.config, tuning_folds=folds, seeds=args.seeds, by=args.by, chosen=chosen,
                        candidates=scores, missing=missing)


if __name__ == "__main__":
    main()
