"""Where does a model stop telling utterances apart? A training diagnostic.

Trains one model on one EmoDB fold with the package's recipe (the schedule of
the full `--epochs` run), stops after `--stop-after` epochs, and records after
every epoch, on the validation utterances: the training accuracy and
validation UA, and for each stage of the network (every layer named in
`--probe`, default: the outputs of SpeechFormer's stages, its pooled vector and
its logits) how much the utterances still differ there: the spread of the
utterance-mean vectors across utterances divided by their mean norm. A
network that has collapsed gives (almost) the same vector for every
utterance: spread near 0 from some stage on.

    python benchmarks/collapse.py --model speechformer --learning-rate 1e-3
    python benchmarks/collapse.py --model speechformer --learning-rate 1e-3 \\
        --model-option normalize_first=True
    python benchmarks/collapse.py --quick
"""

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from accuracy import CORPORA  # noqa: E402
from accuracy import HERE  # noqa: E402
from accuracy import _file_name_value  # noqa: E402
from accuracy import _model_option  # noqa: E402
from accuracy import _set_threads  # noqa: E402
from report import write_report  # noqa: E402

SPEECHFORMER_PROBES = ("merge_0", "merge_1", "merge_2", "pool", "head")


def spread(outputs):
    """Std across utterances of each utterance's mean vector, averaged over
    dimensions, divided by the mean vector norm (0: every utterance alike)."""
    import numpy as np

    vectors = outputs if outputs.ndim == 2 else outputs.mean(axis=1)
    norm = float(np.mean(np.linalg.norm(vectors, axis=-1))) + 1e-12
    return float(np.mean(vectors.std(axis=0)) * np.sqrt(vectors.shape[-1]) / norm)


def main(argv=None):
    threads = _set_threads(argv if argv is not None else sys.argv[1:])
    from keras_hrf import training

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="speechformer", choices=sorted(training.MODELS))
    parser.add_argument("--model-option", dest="model_options", type=_model_option,
                        action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--fold", default="03", help="the EmoDB speaker held out")
    parser.add_argument("--stop-after", type=int, default=4, help="epochs to train")
    parser.add_argument("--probe", nargs="+", default=None, help="layer names to measure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1 epoch, a tiny model")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "collapse"))
    training.add_recipe_arguments(parser)
    args = parser.parse_args(argv)
    options = dict(args.model_options)
    if args.quick:
        args.stop_after = 1
        options.update(model_dim=16, layers_per_stage=[1, 1, 1, 1], num_heads=2) \
            if args.model == "speechformer" else options.update(model_dim=16, num_layers=1,
                                                                num_heads=2)
    if args.learning_rate is None:
        args.learning_rate = training.default_learning_rate(args.model, options.get("size", "lite"))
    recipe = training.recipe_from_args(parser, args)

    import keras
    import numpy as np

    from keras_hrf import datasets
    from keras_hrf.features import PaddedBatches

    if threads is not None and keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(threads)
    manifest = datasets.load_emodb(CORPORA["emodb"]["root"])
    classes = datasets.class_names(manifest)
    features, usable, _ = training.extract_features(
        manifest, os.path.join(HERE, "results", "accuracy", "scratch", "feature_cache"))
    fold = training.prepare_fold(manifest, classes, features, args.fold, usable, args.seed,
                                 recipe.max_seconds)
    keras.utils.set_random_seed(args.seed)
    model = training.build_model(args.model, len(classes), fold.input_dim, recipe, **options)
    training.compile_for_training(model, len(classes), recipe,
                                  fold.steps_per_epoch(recipe.batch_size), model_name=args.model)
    names = [layer.name for layer in model.layers]
    # The utterance stage's last layer, whatever the stage's depth.
    last_stage = [name for name in names if name.startswith("stage_3_layer_")][-1:]
    probes = args.probe or ([p for p in SPEECHFORMER_PROBES[:3] + tuple(last_stage)
                             + SPEECHFORMER_PROBES[3:] if p in names] or ["pool", "head"])
    probe_model = keras.Model(model.input, [model.get_layer(name).output for name in probes])
    validation = PaddedBatches(fold.inputs["validation"], batch_size=recipe.batch_size)

    class Probe(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rows = []

        def on_epoch_end(self, epoch, logs=None):
            outputs = probe_model.predict(validation.for_keras(), verbose=0)
            outputs = outputs if isinstance(outputs, list) else [outputs]
            row = {"epoch": epoch + 1,
                   "train_accuracy": round(float(logs["accuracy"]), 4),
                   "val_ua": round(float(logs["val_ua"]), 4),
                   "spread": {name: round(spread(np.asarray(out)), 5)
                              for name, out in zip(probes, outputs)}}
            self.rows.append(row)
            print(json.dumps(row), flush=True)

    probe = Probe()
    started = time.time()
    model.fit(fold.batches("train", recipe.batch_size, shuffle=True, seed=args.seed),
              validation_data=fold.batches("validation", recipe.batch_size),
              epochs=args.stop_after, shuffle=False, verbose=0, callbacks=[probe])
    tag = f"{args.model}_lr{args.learning_rate:g}" + "".join(
        f"_{k.replace('_', '')}{_file_name_value(v)}"
        for k, v in sorted(dict(args.model_options).items()))
    if recipe.clipnorm:
        tag += f"_clip{recipe.clipnorm:g}"
    if recipe.optimizer != "adamw":
        tag += f"_{recipe.optimizer}"
    name = f"{tag}_quick.json" if args.quick else f"{tag}.json"
    return write_report(os.path.join(args.output, name), __file__, argv,
                        backend=keras.backend.backend(), model=args.model,
                        model_options=dict(args.model_options), fold=args.fold,
                        recipe=dataclasses.asdict(recipe), stop_after=args.stop_after,
                        seconds=round(time.time() - started, 1), epochs=probe.rows)


if __name__ == "__main__":
    main()
