"""The conventions a PyTorch user expects: --version, --help with defaults, py.typed, a license file,
TensorBoard logging beside metrics.csv."""
import sys
import tomllib
from pathlib import Path

import pytest

import stochgrad
from stochgrad import cli
from stochgrad.studies.training import Metrics

ROOT = Path(__file__).resolve().parents[1]


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"stochgrad {stochgrad.__version__} (torch ")


@pytest.mark.parametrize("argv", [["compare"], ["check"], ["train", "vae"], ["train", "gating"]])
def test_help_shows_defaults(argv, capsys):
    with pytest.raises(SystemExit):
        cli.main([*argv, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 0)" in out                                     # --seed
    if argv[0] == "train":
        assert "--tensorboard" in out and "(default: cpu)" in out   # --device


def test_packaging_metadata():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT" and meta["project"]["license-files"] == ["LICENSE"]
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert (ROOT / "src" / "stochgrad" / "py.typed").exists()
    assert "py.typed" in meta["tool"]["setuptools"]["package-data"]["stochgrad"]
    assert {"docs", "tensorboard"} <= set(meta["project"]["optional-dependencies"])


def test_tensorboard_logs_beside_the_csv(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    m = Metrics(str(tmp_path / "metrics.csv"), ["step", "loss", "seconds"], tensorboard=True)
    for step in range(3):
        m.write(step=step, loss=1.0 / (step + 1), seconds=0.1 * step)
    assert len(m.read()) == 3
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [round(e.value, 6) for e in events.Scalars("loss")] == [1.0, 0.5, 0.333333]


def test_tensorboard_missing_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)     # as if tensorboard were absent
    with pytest.raises(SystemExit):
        Metrics(str(tmp_path / "metrics.csv"), ["step", "loss"], tensorboard=True)
    assert ".[tensorboard]" in capsys.readouterr().err
