"""`stochgrad train vae` on small data: exact resume, safe checkpoints, NaN handling, distributed match."""
import os
import subprocess
import sys

import pytest
import torch

from stochgrad.cli import main
from stochgrad.studies import vae
from stochgrad.studies.training import load_checkpoint

ARGS = ["--dataset", "digits", "--batch-size", "16", "--test-samples", "5", "--test-examples", "50",
        "--log-every", "5", "--checkpoint-every", "5", "--quiet"]


def run(out, steps, *extra):
    return main(["train", "vae", "--out", str(out), "--steps", str(steps), *ARGS, *extra])


def params(out):
    return load_checkpoint(os.path.join(out, "checkpoint.pt"))


@pytest.mark.parametrize("estimator", ["reinforce_optimal", "rebar"])
def test_resume_is_exact(tmp_path, estimator):
    run(tmp_path / "once", 20, "--estimator", estimator)
    run(tmp_path / "twice", 10, "--estimator", estimator)
    run(tmp_path / "twice", 20, "--estimator", estimator, "--resume")
    a, b = params(tmp_path / "once"), params(tmp_path / "twice")
    for part in ("model", "estimator"):
        for k, v in a[part].items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, b[part][k]), (part, k)
    rows_once = (tmp_path / "once" / "metrics.csv").read_text().splitlines()
    rows_twice = (tmp_path / "twice" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in rows_once] == [r.split(",")[:2] for r in rows_twice]


def test_outputs_and_learning(tmp_path):
    run(tmp_path, 60, "--estimator", "disarm", "--lr", "3e-3")
    for name in ("metrics.csv", "summary.json", "curves.png", "checkpoint.pt"):
        assert (tmp_path / name).exists()
    rows = [r.split(",") for r in (tmp_path / "metrics.csv").read_text().splitlines()[1:]]
    assert float(rows[-1][1]) > float(rows[0][1])  # the training ELBO rises


def test_corrupted_checkpoint_is_a_clear_error_and_left_alone(tmp_path, capsys):
    tmp_path.joinpath("checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit):
        run(tmp_path, 10, "--resume")
    assert "corrupted" in capsys.readouterr().err
    assert tmp_path.joinpath("checkpoint.pt").read_bytes() == b"not a checkpoint"


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    calls = {"n": 0}
    real = vae.BernoulliVAE.loss

    def poisoned(self, *a, **k):
        calls["n"] += 1
        out = real(self, *a, **k)
        return out * float("nan") if calls["n"] > 12 else out

    monkeypatch.setattr(vae.BernoulliVAE, "forward", poisoned)
    with pytest.raises(SystemExit):
        run(tmp_path, 30, "--estimator", "reinforce")
    err = capsys.readouterr().err
    assert "loss became nan at step 13" in err and "last good checkpoint (step 10)" in err
    assert params(tmp_path)["step"] == 10


def test_bad_names_list_the_valid_ones(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run(tmp_path, 5, "--estimator", "nope")
    assert "valid: straight_through" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "vae", "--dataset", "cifar", "--out", str(tmp_path), "--quiet"])
    assert "valid: mnist, fashion-mnist, digits" in capsys.readouterr().err


def test_torchrun_two_processes_match_one(tmp_path):
    common = ["--estimator", "disarm", "--steps", "6", "--batch-size", "16", "--dataset", "digits",
              "--test-samples", "2", "--test-examples", "20", "--checkpoint-every", "6", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    "-m", "stochgrad", "train", "vae", "--out", str(tmp_path / "ddp"), *common],
                   check=True, env=env, capture_output=True, timeout=300)
    main(["train", "vae", "--out", str(tmp_path / "one"), *common])
    a, b = params(tmp_path / "ddp"), params(tmp_path / "one")
    for k, v in a["model"].items():
        assert torch.allclose(v, b["model"][k], atol=1e-5), k
