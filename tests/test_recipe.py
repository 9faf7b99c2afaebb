"""The training recipe: one definition that the examples and benchmarks share."""

import argparse

import keras
import numpy as np
import pytest
from test_benchmarks import _load
from test_examples import _load_example

from keras_hrf import recipe as recipe_lib
from keras_hrf import training
from keras_hrf.recipe import Recipe


def test_the_schedule_warms_up_then_decays_to_a_hundredth():
    recipe = Recipe(epochs=10)
    schedule = recipe.learning_rate_schedule(1e-3, steps_per_epoch=30)  # 300 steps
    assert recipe.warmup_steps(30) == 30
    rate = lambda step: float(keras.ops.convert_to_numpy(schedule(step)))  # noqa: E731
    assert rate(0) == pytest.approx(0.0, abs=1e-9)
    assert rate(15) == pytest.approx(0.5e-3, rel=1e-4)
    assert rate(30) == pytest.approx(1e-3, rel=1e-4)
    assert rate(165) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5), rel=1e-3)  # half-way
    assert rate(300) == pytest.approx(1e-5, rel=1e-3)
    assert Recipe(epochs=100).warmup_steps(30) == 200  # at most 200 warm-up steps


def test_optimizers_follow_the_recipe():
    adamw = Recipe().make_optimizer(1e-3, steps_per_epoch=10)
    assert isinstance(adamw, keras.optimizers.AdamW)
    assert adamw.weight_decay == pytest.approx(0.05)
    assert adamw.global_clipnorm is None
    sgd = Recipe(optimizer="sgd", weight_decay=5e-4, momentum=0.8, clipnorm=1.0).make_optimizer(
        1e-2, steps_per_epoch=10)
    assert isinstance(sgd, keras.optimizers.SGD)
    assert sgd.momentum == pytest.approx(0.8) and sgd.weight_decay == pytest.approx(5e-4)
    assert sgd.global_clipnorm == pytest.approx(1.0)


class _CountingSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The recipe's schedule, counting how often an optimizer asks for it."""

    def __init__(self, schedule):
        self.schedule = schedule
        self.calls = 0

    def __call__(self, step):
        self.calls += 1
        return self.schedule(step)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_the_recipes_optimizers_ask_for_the_rate_once_a_step_and_train_as_keras_own(name, backend):
    """Keras' TensorFlow optimizers evaluate a schedule once per variable for
    the weight decay; the recipe's evaluate it once a step, with the same
    updates. Elsewhere the recipe keeps Keras' own (fused on PyTorch)."""
    recipe = Recipe(optimizer=name, epochs=2)
    keras_class = {"adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD}[name]
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(3, 4)).astype("float32") for _ in range(6)]
    gradients = [[rng.normal(size=(3, 4)).astype("float32") for _ in start] for _ in range(4)]
    trained = {}
    for label in ("recipe", "keras"):
        optimizer = recipe.make_optimizer(1e-2, steps_per_epoch=2)
        assert isinstance(optimizer, keras_class)
        counting = _CountingSchedule(optimizer._learning_rate)
        if label == "keras":
            config = optimizer.get_config()
            config["learning_rate"] = counting
            optimizer = keras_class(**config)
        else:
            optimizer._learning_rate = counting
        variables = [keras.Variable(value) for value in start]
        optimizer.build(variables)
        for step_gradients in gradients:
            optimizer.apply([keras.ops.convert_to_tensor(g) for g in step_gradients], variables)
        trained[label] = ([keras.ops.convert_to_numpy(v) for v in variables], counting.calls)
    (recipe_weights, recipe_calls), (keras_weights, keras_calls) = trained["recipe"], trained["keras"]
    if backend == "tensorflow":
        assert recipe_calls == len(gradients)
        assert keras_calls >= len(gradients) * len(start)  # what the recipe's optimizers avoid
    else:
        assert type(recipe_lib.Recipe(optimizer=name).make_optimizer(1e-2, 2)).__module__.startswith(
            "keras.")
    for ours, theirs in zip(recipe_weights, keras_weights):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    assert not np.allclose(recipe_weights[0], start[0])  # the steps did change the weights


def test_a_model_compiled_with_the_recipe_saves_and_reloads(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    recipe_lib.compile_for_training(model, 2, Recipe(), steps_per_epoch=3, model_name="conformer")
    model.fit(np.ones((4, 3), "float32"), np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(reloaded.optimizer, keras.optimizers.AdamW)
    assert int(reloaded.optimizer.iterations) == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"optimizer": "adam"}, "optimizer='adam'"),
    ({"epochs": 0}, "epochs"),
    ({"learning_rate": -1.0}, "learning_rate"),
    ({"max_seconds": 0}, "max_seconds"),
    ({"clipnorm": 0.0}, "clipnorm"),
])
def test_bad_recipes_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Recipe(**kwargs)


def test_command_line_flags_make_the_recipe_and_bad_ones_are_refused(capsys):
    parser = argparse.ArgumentParser()
    recipe_lib.add_recipe_arguments(parser)
    args = parser.parse_args([])
    assert recipe_lib.recipe_from_args(parser, args) == Recipe()
    args = parser.parse_args(["--optimizer", "sgd", "--learning-rate", "0.01", "--clipnorm", "2",
                              "--no-spec-augment", "--epochs", "7"])
    made = recipe_lib.recipe_from_args(parser, args)
    assert made == Recipe(optimizer="sgd", learning_rate=0.01, clipnorm=2.0,
                          spec_augment=False, epochs=7)
    with pytest.raises(SystemExit):
        recipe_lib.recipe_from_args(parser, parser.parse_args(["--epochs", "0"]))
    assert "epochs" in capsys.readouterr().err


FLAGS = ["--epochs", "7", "--batch-size", "8", "--learning-rate", "3e-4", "--optimizer", "sgd",
         "--weight-decay", "1e-4", "--momentum", "0.8", "--clipnorm", "1.5",
         "--no-spec-augment", "--max-seconds", "4"]


def test_the_example_and_the_benchmark_make_the_same_recipe_from_the_same_flags():
    accuracy = _load("accuracy")
    example = _load_example("iemocap").parse_args(FLAGS)
    benchmark = accuracy.parse_args(FLAGS)
    assert example.recipe == accuracy.config_recipe(benchmark, "lite_plain")
    assert example.recipe.optimizer == "sgd" and example.recipe.max_seconds == 4.0
    defaults = (_load_example("iemocap").parse_args([]), accuracy.parse_args([]))
    assert defaults[0].recipe == accuracy.config_recipe(defaults[1], "lite_plain")
    assert defaults[0].recipe.learning_rate == 1e-3  # resolved to the Conformer's own
    # Each size at its own rate, in the example as in the benchmark's large_plain.
    large = _load_example("iemocap").parse_args(["--size", "large"])
    assert large.recipe == accuracy.config_recipe(defaults[1], "large_plain")
    assert large.recipe.learning_rate == 3e-4
    tuner = _load_example("tune_expansion").parse_args(
        [f for f in FLAGS if f not in ("--learning-rate", "3e-4")])
    assert tuner.recipe == Recipe(**{**vars(example.recipe), "learning_rate": None})


def test_build_model_adds_the_recipes_spec_augment_only():
    with_masks = training.build_model("conformer", 3, 16, Recipe(), num_layers=1, model_dim=16,
                                      num_heads=2, ffn_dim=32)
    without = training.build_model("conformer", 3, 16, Recipe(spec_augment=False), num_layers=1,
                                   model_dim=16, num_heads=2, ffn_dim=32)
    assert with_masks.get_config()["spec_augment"] is True
    assert without.get_config()["spec_augment"] is None
    assert with_masks.count_params() == without.count_params()


def test_compile_for_training_uses_the_models_rate_and_logs_ua():
    assert Recipe().peak_learning_rate("speechformer") == 1e-3
    assert Recipe().peak_learning_rate("speechformer", "large") == 3e-4
    assert Recipe(learning_rate=3e-3).peak_learning_rate("speechformer") == 3e-3
    assert Recipe(learning_rate=3e-3).peak_learning_rate("speechformer", "large") == 3e-3
    model = training.build_model("conformer", 3, 16, Recipe(epochs=2), model_dim=16,
                                 num_layers=1, num_heads=2, ffn_dim=32, kernel_size=3,
                                 subsampling_filters=4)
    recipe_lib.compile_for_training(model, 3, Recipe(epochs=2), steps_per_epoch=5,
                                    model_name="conformer")
    schedule = model.optimizer._learning_rate
    assert float(keras.ops.convert_to_numpy(schedule(1))) == pytest.approx(1e-3)  # warm-up 1
    large = recipe_lib.compile_for_training(
        training.build_model("conformer", 3, 16, Recipe(epochs=2), model_dim=16, num_layers=1,
                             num_heads=2, ffn_dim=32, kernel_size=3, subsampling_filters=4),
        3, Recipe(epochs=2), steps_per_epoch=5, model_name="conformer", size="large")
    assert float(keras.ops.convert_to_numpy(large.optimizer._learning_rate(1))) == \
        pytest.approx(3e-4)
    x = np.random.default_rng(0).normal(size=(4, 60, 16)).astype("float32")
    history = model.fit(x, np.array([0, 1, 2, 0]), epochs=1, batch_size=4, verbose=0)
    assert "ua" in history.history and np.isfinite(history.history["loss"][0])
