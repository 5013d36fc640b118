"""The command line, as a user runs it."""
import subprocess
import sys

from stochgrad.cli import main


def test_check_passes_and_prints_a_table(capsys):
    assert main(["check", "--estimators", "reinforce,straight_through", "--estimates", "2000", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "reinforce" in out and "unbiased: ok" in out and "biased, as declared" in out


def test_check_fails_when_an_unbiased_estimator_shows_bias(capsys):
    # a threshold no estimate can meet forces a detection: the exit status must say so
    assert main(["check", "--estimators", "reinforce", "--estimates", "500", "--threshold", "1e-9", "--quiet"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_unknown_estimator_lists_the_known_ones():
    r = subprocess.run([sys.executable, "-m", "stochgrad", "check", "--estimators", "nope"], capture_output=True,
                       text=True)
    assert r.returncode != 0 and "unknown estimator" in r.stderr and "reinforce_optimal" in r.stderr


def test_estimators_lists_every_name(capsys):
    assert main(["estimators"]) == 0
    out = capsys.readouterr().out
    for name in ("disarm", "relax", "finite_difference", "node_perturbation"):
        assert name in out


def test_threads_flag_sets_torch_and_is_recorded(tmp_path, capsys):
    import json

    import pytest
    import torch

    from stochgrad.cli import build_parser
    from stochgrad.runinfo import write_json

    before = torch.get_num_threads()
    try:
        assert main(["check", "--estimators", "reinforce", "--estimates", "200", "--threads", "1", "--quiet"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert build_parser().parse_args(["train", "vae"]).threads == 1   # the default: one thread
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compare", "--threads", "0"])
    assert "argument --threads: must be an integer >= 1" in capsys.readouterr().err
    write_json(str(tmp_path / "summary.json"), {"x": 1.0})
    env = json.loads((tmp_path / "summary.json").read_text())["environment"]
    assert set(env) >= {"torch", "threads", "commit", "date"} and env["torch"] == torch.__version__
