"""KerasTuner search over the HRF expansion width: the HyperModel, the example,
resuming, and KerasTuner's chief/worker oracle on 127.0.0.1."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import keras
import keras_tuner
import pandas as pd
import pytest
from test_examples import _load_example

import keras_hrf
from keras_hrf import tuning

SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "tune_expansion.py")
# Small trials: one block, width 32, one epoch; the search logic is what is tested.
TINY = ["--epochs", "1", "--num-layers", "1", "--model-dim", "32", "--max-seconds", "1.5"]


def _hrf_layers(model):
    return [l for l in model._flatten_layers() if isinstance(l, keras_hrf.HRFDense)]


@pytest.mark.parametrize("model", sorted(keras_hrf.training.MODELS))
def test_the_hypermodel_builds_every_model_at_every_width(model):
    hypermodel = tuning.HRFHyperModel(4, input_dim=40, model=model, expansions=(0, 1, 2, 4, 8),
                                      model_kwargs={"num_layers": 1})
    counts = {}
    for width in (0, 1, 2, 4, 8):
        hp = keras_tuner.HyperParameters()
        hp.values["hrf_expansion"] = width
        built = hypermodel.build(hp)
        assert bool(_hrf_layers(built)) == (width > 0)
        assert built.compiled
        counts[width] = (built.count_params(), tuning.deployed_parameter_count(built))
    plain = counts[0][0]
    assert all(deployed == plain for _, deployed in counts.values())
    assert counts[1][0] < counts[2][0] < counts[4][0] < counts[8][0]
    # The shortcut count agrees with a real merge.
    assert keras_hrf.reparameterize(built).count_params() == plain


def test_the_default_space_holds_the_plain_model_the_batch_norm_alone_and_hrf():
    hypermodel = tuning.HRFHyperModel(4, input_dim=16, model_kwargs={"num_layers": 1})
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)
    hp.values["hrf_expansion"] = 2
    hypermodel.build(hp)
    space = {p.name: p for p in hp.space}
    assert space["norm_only"].values == ["none", "batch"]
    assert space["hrf_norm"].values == ["none", "batch"]
    assert space["hrf_expansion"].values == [0, 1, 2, 4, 8]
    hp.values.update(hrf_expansion=0, norm_only="batch")
    alone = _hrf_layers(hypermodel.build(hp))
    assert alone and all(l.expansion_units is None and l.expansion_norm == "batch" for l in alone)
    paper = tuning.HRFHyperModel(4, input_dim=16, hrf_norms=(None,))
    paper_hp = keras_tuner.HyperParameters()
    paper.build(paper_hp)
    assert "norm_only" not in {p.name for p in paper_hp.space}


def test_conditional_hrf_options_and_fixed_values():
    hypermodel = tuning.HRFHyperModel(4, expansions=(0, 2), hrf_targets=("ffn", "ffn+attention"),
                                      hrf_norms=(None, "batch"), learning_rates=(1e-3,))
    hp = keras_tuner.HyperParameters()
    hp.values.update(hrf_expansion=2, hrf_targets="ffn+attention", hrf_norm="batch")
    model = hypermodel.build(hp)
    assert model.get_config()["hrf_targets"] == ["ffn", "attention"]
    assert model.get_config()["hrf_norm"] == "batch"
    assert hp.get("learning_rate") == 1e-3  # one value: fixed, still recorded
    names = {p.name: p for p in hp.space}
    assert [c.values for c in names["hrf_targets"].conditions] == [[2]]


def test_width_zero_with_batch_norm_is_the_batch_norm_alone():
    hypermodel = tuning.HRFHyperModel(4, input_dim=16, expansions=(0, 2), hrf_norms=(None, "batch"),
                                      hrf_targets=("ffn", "ffn+attention"),
                                      model_kwargs={"num_layers": 1, "model_dim": 32})
    built = {}
    for norm, targets in (("none", None), ("batch", "ffn"), ("batch", "ffn+attention")):
        hp = keras_tuner.HyperParameters()
        hp.values.update(hrf_expansion=0, norm_only=norm)
        if targets:
            hp.values["norm_only_targets"] = targets
        built[norm, targets] = model = hypermodel.build(hp)
        config = model.get_config()
        assert config["hrf_expansion"] is None
        assert config["hrf_norm"] == (None if norm == "none" else "batch")
        assert config["hrf_targets"] == (targets or "ffn").split("+")
    plain = built["none", None]
    assert _hrf_layers(plain) == []
    ffn_only = _hrf_layers(built["batch", "ffn"])
    with_attention = _hrf_layers(built["batch", "ffn+attention"])
    assert ffn_only and len(with_attention) > len(ffn_only)
    assert all(l.expansion_units is None and l.expansion_norm == "batch" for l in with_attention)
    for model in built.values():
        assert tuning.deployed_parameter_count(model) == plain.count_params()
        assert keras_hrf.reparameterize(model).count_params() == plain.count_params()
    names = {p.name: p for p in hp.space}
    assert [c.values for c in names["norm_only"].conditions] == [[0]]
    assert [c.values for c in names["norm_only_targets"].conditions] == [[0], ["batch"]]


def test_without_batch_norm_width_zero_adds_nothing_to_the_space():
    hypermodel = tuning.HRFHyperModel(4, expansions=(0, 2), hrf_norms=(None,))
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)
    hp.values["hrf_expansion"] = 2
    hypermodel.build(hp)
    assert sorted(p.name for p in hp.space) == sorted(
        ["hrf_expansion", "hrf_targets", "hrf_norm", "learning_rate", "dropout"])


@pytest.mark.parametrize("name", ["random", "bayesian"])
def test_keras_tuner_oracles_reach_the_batch_norm_alone_and_no_model_twice(name, tmp_path):
    """KerasTuner's own oracle, driven trial by trial without training: the
    space holds exactly the 7 distinct models of 2 widths x 2 norms x 2 target
    sets (one plain model), and the search stops once it has built each."""
    hypermodel = tuning.HRFHyperModel(4, input_dim=16, expansions=(0, 2), hrf_norms=(None, "batch"),
                                      hrf_targets=("ffn", "ffn+attention"),
                                      model_kwargs={"num_layers": 1, "model_dim": 32})
    tuner = tuning.make_tuner(name, hypermodel, max_trials=12, seed=5, directory=str(tmp_path),
                              project_name="space")
    oracle, models = tuner.oracle, []
    for step in range(12):
        trial = oracle.create_trial("tuner0")
        if trial.status != "RUNNING":
            break
        model = hypermodel.build(trial.hyperparameters)
        config = model.get_config()
        inserted = config["hrf_expansion"] or config["hrf_norm"]
        models.append((config["hrf_expansion"] or 0, config["hrf_norm"] or "none",
                       "+".join(config["hrf_targets"]) if inserted else "-"))
        oracle.update_trial(trial.trial_id, {
            tuning.OBJECTIVE: step / 12, "train_seconds": 1.0,
            "params_training": model.count_params(),
            "params_deployed": tuning.deployed_parameter_count(model)})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    assert trial.status == "STOPPED"  # the space ran out before max_trials
    assert sorted(models) == sorted(
        [(0, "none", "-"), (0, "batch", "ffn"), (0, "batch", "ffn+attention")]
        + [(2, norm, targets) for norm in ("none", "batch") for targets in ("ffn", "ffn+attention")])
    widths = tuning.width_summary(tuning.trials_table(oracle))
    assert widths[["hrf_expansion", "hrf_norm", "trials"]].values.tolist() == [
        [0, "batch", 2], [0, "none", 1], [2, "batch", 2], [2, "none", 2]]
    assert widths["params_deployed"].nunique() == 1
    training = widths.set_index(["hrf_expansion", "hrf_norm"])["params_training"]
    assert training[0, "none"] < training[0, "batch"] < training[2, "none"] < training[2, "batch"]


def _finish(tuner, trial, score):
    tuner.oracle.update_trial(trial.trial_id, {tuning.OBJECTIVE: score})
    trial.status = "COMPLETED"
    tuner.on_trial_end(trial)  # ends the trial, then saves the oracle and the tuner


def _random_search_made_by_the_package(hypermodel, **kwargs):
    return tuning.make_tuner("random", hypermodel, **kwargs)


def _random_search_made_by_hand(hypermodel, **kwargs):
    return keras_tuner.RandomSearch(hypermodel, objective=tuning.objective(), **kwargs)


@pytest.mark.parametrize("make", [_random_search_made_by_the_package, _random_search_made_by_hand])
def test_a_trial_started_just_before_a_kill_is_retried_not_left_running(make, tmp_path):
    """KerasTuner writes a new trial's `trial.json` and then `oracle.json`; a
    kill between the two must not leave that trial RUNNING forever and the
    resumed search one trial short, whether the package or the user built
    the tuner."""
    hypermodel = tuning.HRFHyperModel(4, expansions=(0, 1, 2), hrf_norms=(None,))
    kwargs = {"max_trials": 3, "seed": 1, "directory": str(tmp_path), "project_name": "lost"}
    tuner = make(hypermodel, **kwargs)
    _finish(tuner, tuner.oracle.create_trial(tuner.tuner_id), 0.5)
    oracle_file = tmp_path / "lost" / "oracle.json"
    before_second_trial = oracle_file.read_text()
    assert tuner.oracle.create_trial(tuner.tuner_id).trial_id == "1"
    # The kill came after trial 1's own file and before the oracle's.
    oracle_file.write_text(before_second_trial)
    assert json.loads((tmp_path / "lost" / "trial_1" / "trial.json").read_text())["status"] \
        == "RUNNING"

    tuner = make(hypermodel, **kwargs)
    assert sorted(tuner.oracle.trials) == ["0", "1"]  # resumed, not started afresh
    assert tuning.retry_trials_the_oracle_lost(tuner.oracle) == []  # already queued, once
    retried = tuner.oracle.create_trial(tuner.tuner_id)
    assert retried.trial_id == "1"
    _finish(tuner, retried, 0.6)
    _finish(tuner, tuner.oracle.create_trial(tuner.tuner_id), 0.7)
    assert tuner.oracle.create_trial(tuner.tuner_id).status == "STOPPED"
    table = tuning.trials_table(tuner.oracle)
    assert list(table["trial_id"]) == ["0", "1", "2"]
    assert list(table["status"]) == ["COMPLETED"] * 3


def test_a_search_of_the_batch_norm_alone_reports_it_against_the_plain_model(tmp_path):
    report = _load_example("tune_expansion").main(
        [*TINY, "--max-trials", "1", "--expansions", "0", "--hrf-norms", "batch",
         "--output", str(tmp_path / "tune")])
    assert report["best_hyperparameters"]["norm_only"] == "batch"
    assert report["params_merged"] == report["params_plain"] < report["params_best_while_training"]
    assert report["max_abs_logit_difference"] < 1e-4
    widths = pd.read_csv(tmp_path / "tune" / "widths.csv")
    assert widths[["hrf_expansion", "hrf_norm"]].values.tolist() == [[0, "batch"]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"expansions": ()}, r"Empty search space: `expansions`"),
        ({"expansions": (0, -1)}, r"`expansions`.*Received: -1"),
        ({"learning_rates": ()}, r"Empty search space: `learning_rates`"),
        ({"hrf_targets": ("ffn+mlp",)}, r"hrf_targets.*'mlp'"),
        ({"hrf_norms": ("layer",)}, r"`hrf_norms`.*'layer'"),
        ({"model": "bert"}, r"Unknown model 'bert'"),
        ({"size": "huge"}, r"Unknown size 'huge'"),
    ],
)
def test_bad_search_spaces_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tuning.HRFHyperModel(4, **kwargs)


@pytest.mark.parametrize("name", sorted(tuning.TUNERS))
def test_every_tuner_maximizes_validation_ua(name, tmp_path):
    tuner = tuning.make_tuner(name, tuning.HRFHyperModel(4), max_trials=5, max_epochs=4,
                              directory=str(tmp_path), project_name=name)
    assert tuner.oracle.objective.name == "val_ua"
    assert tuner.oracle.objective.direction == "max"
    assert tuner.oracle.max_trials == 5


def test_unknown_tuner_and_bad_trial_counts_are_named():
    hypermodel = tuning.HRFHyperModel(4)
    with pytest.raises(ValueError, match=r"Unknown tuner 'grid'.*bayesian"):
        tuning.make_tuner("grid", hypermodel, max_trials=2)
    with pytest.raises(ValueError, match=r"`max_trials` must be a positive integer"):
        tuning.make_tuner("random", hypermodel, max_trials=0)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "bert"], r"--model: unknown model 'bert'"),
        (["--tuner", "grid"], r"--tuner: unknown tuner 'grid'"),
        (["--expansions", ","], r"--expansions: empty search space"),
        (["--tuner", "hyperband", "--epochs", "1"], r"hyperband needs --epochs >= 2"),
    ],
)
def test_bad_command_lines_are_named(argv, message, capsys):
    example = _load_example("tune_expansion")
    with pytest.raises(SystemExit):
        example.main(argv)
    assert re.search(message, capsys.readouterr().err)


def test_a_data_option_that_points_nowhere_is_named(tmp_path):
    example = _load_example("tune_expansion")
    with pytest.raises(keras_hrf.datasets.DatasetError, match=r"Data folder not found: .*nowhere"):
        example.main(["--data-dir", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")])


def test_speaker_normalization_is_searched_with_and_kept_for_the_output(tmp_path):
    example = _load_example("tune_expansion")
    output = tmp_path / "tune"
    report = example.main([*TINY, "--max-trials", "1", "--expansions", "2", "--normalize",
                           "speaker", "--output", str(output)])
    assert report["normalization"] == "speaker"
    assert json.loads((output / "run_settings.json").read_text())["normalize"] == "speaker"
    with pytest.raises(SystemExit, match=r"normalize: 'speaker' then, 'train' now"):
        example.main([*TINY, "--max-trials", "1", "--expansions", "2", "--output", str(output)])


def _environment(backend, **extra):
    return dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", **extra)


def _start(args, env):
    return subprocess.Popen([sys.executable, SCRIPT, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for(condition, process, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if process.poll() is not None:
            return None
        time.sleep(0.1)
    return None


def _trial_status(output, trial_id):
    path = output / "search" / f"trial_{trial_id}" / "trial.json"
    return json.loads(path.read_text())["status"] if path.is_file() else None


@pytest.mark.process_mechanics
def test_a_killed_search_resumes_without_losing_a_finished_trial(tmp_path, backend):
    output = tmp_path / "tune"
    args = [*TINY, "--max-trials", "3", "--expansions", "0,1,2", "--hrf-norms", "none",
            "--output", str(output)]
    first = _start(args, _environment(backend))
    # Kill while the second trial runs: the first has finished.
    started = _wait_for(lambda: _trial_status(output, 1) == "RUNNING", first, 400)
    first.send_signal(signal.SIGKILL)
    log = first.communicate()[0]
    assert started, f"the second trial never started:\n{log[-3000:]}"
    finished = (output / "search" / "trial_0" / "trial.json").read_text()
    assert json.loads(finished)["status"] == "COMPLETED"
    assert not (output / "trials.csv").exists()

    second = _start(args, _environment(backend))
    log = second.communicate(timeout=600)[0]
    assert second.returncode == 0, log[-3000:]
    # The finished trial was kept as it was, not run again.
    assert (output / "search" / "trial_0" / "trial.json").read_text() == finished
    table = pd.read_csv(output / "trials.csv")
    assert list(table["status"]) == ["COMPLETED"] * 3
    assert sorted(table["hrf_expansion"]) == [0, 1, 2]
    assert table["train_seconds"].gt(0).all() and table["val_ua"].between(0, 1).all()
    assert table["params_deployed"].nunique() == 1
    assert table.set_index("hrf_expansion")["params_training"].is_monotonic_increasing

    # Once more, in this process: the search is complete, only the reports are made.
    report = _load_example("tune_expansion").main(args)
    assert report["trials_completed"] == 3
    assert report["params_merged"] == report["params_plain"] == table["params_deployed"].iloc[0]
    assert report["max_abs_logit_difference"] < 1e-4
    merged = keras.saving.load_model(str(output / "best_merged.keras"), safe_mode=True)
    assert not _hrf_layers(merged)
    assert merged.count_params() == report["params_plain"]
    widths = pd.read_csv(output / "widths.csv")
    assert list(widths["hrf_expansion"]) == [0, 1, 2] and list(widths["trials"]) == [1, 1, 1]


# Rewrites KerasTuner's state file as fast as it can: about 20 MB of JSON each time.
_STATE_WRITER = """
import sys
if sys.argv[2] == "keras_hrf":
    import keras_hrf.tuning  # noqa: F401  (makes the writes atomic)
from keras_tuner.src import utils
big = ["x" * 1000] * 20000
utils.save_json(sys.argv[1], {"write": 0, "big": big})
print("ready", flush=True)
write = 0
while True:
    write += 1
    utils.save_json(sys.argv[1], {"write": write, "big": big})
"""


def _read_while_written_then_kill(path, importing):
    writer = subprocess.Popen([sys.executable, "-c", _STATE_WRITER, str(path), importing],
                              stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    try:
        assert writer.stdout.readline().strip() == "ready"
        seen = []
        deadline = time.time() + 3
        while time.time() < deadline:
            try:
                seen.append(json.loads(path.read_text())["write"])
            except ValueError:
                return "a reader saw a half-written file"
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        try:
            json.loads(path.read_text())
        except ValueError:
            return "the kill left a half-written file"
        assert len(set(seen)) > 1, "the file was never rewritten while read"
        return None
    finally:
        writer.kill()
        writer.wait()


def test_keras_tuner_state_files_are_never_seen_half_written(tmp_path):
    """Readers (a resumed search, a chief's workers, the tests below) see the
    old oracle.json or the new one, and a kill leaves one of them whole."""
    assert _read_while_written_then_kill(tmp_path / "oracle.json", "keras_hrf") is None
    # No leftover scratch file where KerasTuner globs for trials.
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["oracle.json"]


def test_a_state_file_cut_short_is_named_when_the_search_resumes(tmp_path):
    project = tmp_path / "search"
    (project / "trial_0").mkdir(parents=True)
    (project / "trial_0" / "trial.json").write_text('{"trial_id": "0", "status": "COMPLETED"}')
    # A write a kill interrupted leaves its scratch folder: never read.
    (project / "trial_1" / ".trial.abc.partial").mkdir(parents=True)
    (project / "trial_1" / ".trial.abc.partial" / "trial.json").write_text('{"trial_id": "1", "st')
    tuning.check_search_state(project)
    (project / "trial_1" / "trial.json").write_text("")
    hypermodel = tuning.HRFHyperModel(4, expansions=(0, 2))
    with pytest.raises(ValueError, match=re.escape(str(project / "trial_1" / "trial.json"))):
        tuning.make_tuner("random", hypermodel, 2, directory=str(tmp_path), project_name="search")
    # Starting afresh is still allowed.
    tuning.make_tuner("random", hypermodel, 2, directory=str(tmp_path), project_name="search",
                      overwrite=True)


def _free_port():
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


@pytest.mark.process_mechanics
def test_chief_and_two_workers_on_loopback_survive_a_killed_worker(tmp_path, backend):
    """KerasTuner's own oracle service: a chief and workers tuner0/tuner1 on
    127.0.0.1. tuner1 is killed during its trial and started again with the
    same ID; the chief gives it the same trial back and the search completes."""
    output = tmp_path / "tune"
    args = [*TINY, "--max-trials", "4", "--expansions", "0,1,2,4", "--hrf-norms", "none",
            "--output", str(output)]
    port = str(_free_port())

    def start(tuner_id):
        return _start(args, _environment(backend, KERASTUNER_TUNER_ID=tuner_id,
                                         KERASTUNER_ORACLE_IP="127.0.0.1",
                                         KERASTUNER_ORACLE_PORT=port))

    def ongoing():
        path = output / "search" / "oracle.json"
        try:
            return json.loads(path.read_text())["ongoing_trials"].get("tuner1")
        except (OSError, ValueError, KeyError):
            return None

    chief = start("chief")
    processes = [chief]
    try:
        assert _wait_for(lambda: (output / "search" / "oracle.json").exists(), chief, 300), \
            chief.communicate()[0][-3000:] if chief.poll() is not None else "no chief"
        processes += [start("tuner0"), start("tuner1")]
        killed_trial = _wait_for(ongoing, processes[2], 400)
        processes[2].send_signal(signal.SIGKILL)
        processes[2].communicate()
        assert killed_trial, "tuner1 never got a trial"
        assert ongoing() == killed_trial  # it died mid-trial
        processes[2] = start("tuner1")
        logs = [p.communicate(timeout=500)[0] for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert [p.returncode for p in processes] == [0, 0, 0], [log[-2000:] for log in logs]
    assert "no trial left" in logs[1] and "no trial left" in logs[2]
    table = pd.read_csv(output / "trials.csv", dtype={"trial_id": str})
    assert len(table) == 4 and (table["status"] == "COMPLETED").all()
    assert sorted(table["hrf_expansion"]) == [0, 1, 2, 4]
    assert killed_trial in set(table["trial_id"])
    assert (output / "best_merged.keras").is_file()
    assert json.loads((output / "search_report.json").read_text())["trials_completed"] == 4


def test_learning_rate_defaults_to_the_models_own():
    assert tuning.HRFHyperModel(4, model="speechformer").learning_rates == [1e-3]
    assert tuning.HRFHyperModel(4, model="conformer").learning_rates == [1e-3]
    assert tuning.HRFHyperModel(4, model="speechformer", learning_rates=(3e-4,)).learning_rates == [3e-4]
    assert tuning.HRFHyperModel(4, model="conformer", size="large").learning_rates == [3e-4]
    example = _load_example("tune_expansion")
    assert example.parse_args(["--model", "speechformer"]).learning_rates == [1e-3]
    assert example.parse_args(["--size", "large"]).learning_rates == [3e-4]
    assert example.parse_args(["--learning-rates", "1e-3,3e-4"]).learning_rates == [1e-3, 3e-4]
