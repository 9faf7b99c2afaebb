import importlib.util
import os
import sys

import keras
import numpy as np
import pytest

import keras_hrf

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def _load_example(name):
    if EXAMPLES not in sys.path:  # as when run as a script: its helpers import
        sys.path.insert(0, EXAMPLES)
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_trains_merges_and_saves(tmp_path, capsys):
    quickstart = _load_example("quickstart")
    quickstart.main(["--epochs", "1", "--output", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "synthetic" in printed
    assert "Max |HRF - merged| logit difference" in printed

    hrf = keras.saving.load_model(str(tmp_path / "hrf.keras"), safe_mode=True)
    merged = keras.saving.load_model(str(tmp_path / "merged.keras"), safe_mode=True)
    assert any(isinstance(layer, keras_hrf.HRFDense) for layer in hrf.layers)
    assert not any(isinstance(layer, keras_hrf.HRFDense) for layer in merged.layers)
    x, _ = quickstart.synthetic_sequences(8, 40, 24, 4, seed=5)
    np.testing.assert_allclose(
        merged.predict(x, verbose=0), hrf.predict(x, verbose=0), rtol=1e-4, atol=1e-5
    )


def test_quickstart_help_reads_well(capsys):
    quickstart = _load_example("quickstart")
    with pytest.raises(SystemExit) as exit_info:
        quickstart.main(["--help"])
    assert exit_info.value.code == 0
    assert "--hrf-expansion" in capsys.readouterr().out


def test_startup_noise_is_filtered_and_real_messages_kept(capfd):
    quiet = _load_example("quiet_startup")
    lines = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
        "I0000 00:00:1796152037.654424   27316 port.cc:153] oneDNN custom operations are on.\n",
        "E0000 00:00:1796152112.773648   27674 cuda_platform.cc:52] failed call to cuInit: "
        "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n",
        "E0000 00:00:1796152112.773648   27674 some_kernel.cc:12] a real error\n",
        "UserWarning: a real warning\n",
    ]
    with quiet.filtered_stderr():
        for line in lines:
            os.write(2, line.encode())
    err = capfd.readouterr().err
    assert "a real error" in err and "a real warning" in err
    assert "cuInit" not in err and "oneDNN" not in err and "InitializeLog" not in err
