"""`--resume` of rbm, hashing and bandit continues exactly: a run stopped and resumed ends with the same
parameters and the same metrics (logged every 100 steps) as one run straight through (gating's and vae's have their own tests)."""
import pytest
import torch

from stochgrad.cli import main

CASES = {
    "rbm": ["--dataset", "digits", "--hidden", "12", "--method", "pcd", "--batch-size", "20"],
    "hashing": ["--dataset", "digits", "--bits", "8", "--estimator", "reinforce_optimal", "--batch-size", "20"],
    "bandit": ["--estimator", "reinforce_optimal", "--batch-size", "16"],
}


def run(kind, out, steps, *extra):
    return main(["train", kind, "--out", str(out), "--steps", str(steps), "--quiet", *CASES[kind], *extra])


@pytest.mark.parametrize("kind", list(CASES))
def test_resume_is_exact(tmp_path, kind):
    run(kind, tmp_path / "once", 200, "--seed", "3")
    run(kind, tmp_path / "twice", 100, "--seed", "3")
    run(kind, tmp_path / "twice", 200, "--seed", "3", "--resume")
    a = torch.load(tmp_path / "once" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "twice" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 200
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), (kind, k)
    col = lambda d: [r.split(",")[:2] for r in (tmp_path / d / "metrics.csv").read_text().splitlines()]   # noqa: E731
    assert col("once") == col("twice")


def test_bandit_refuses_to_resume_with_rewards_in_flight(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "bandit", "--delay", "3", "--resume", "--out", str(tmp_path), "--quiet"])
    assert "--delay 0 only" in capsys.readouterr().err
