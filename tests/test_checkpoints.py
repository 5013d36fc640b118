"""Checkpoints are safe to load and verified; a resumed run continues only its own run (issue 14, items 3, 4, 8-11)."""
import csv
import errno
import os
import pickle

import pytest
import torch

from stochgrad.cli import main
from stochgrad.studies import training
from stochgrad.studies import vae as vae_module
from stochgrad.studies.training import CheckpointError, load_checkpoint, save_checkpoint

ARGS = ["--dataset", "digits", "--batch-size", "8", "--test-samples", "2", "--test-examples", "10", "--quiet"]


def vae(out, steps, *extra):
    return main(["train", "vae", "--out", str(out), "--steps", str(steps), *ARGS, *extra])


def rows(out):
    with open(os.path.join(out, "metrics.csv")) as fh:
        return [(r["step"], r["train_elbo"], r["encoder_grad_variance"]) for r in csv.DictReader(fh)]


class _Hostile:
    def __reduce__(self):
        return (open, (str(_Hostile.marker), "w"))


def test_a_checkpoint_holding_code_is_refused_not_run(tmp_path, capsys):  # item 3
    _Hostile.marker = tmp_path / "pwned"
    with open(tmp_path / "checkpoint.pt", "wb") as fh:
        pickle.dump({"step": 1, "payload": _Hostile()}, fh, protocol=2)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(SystemExit):
        vae(tmp_path, 5, "--resume")
    assert not _Hostile.marker.exists()
    assert "refused to load it" in capsys.readouterr().err
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_flipped_bytes_in_a_tensor_are_detected_and_the_file_left_alone(tmp_path, capsys):  # item 4
    path = str(tmp_path / "c.pt")
    w = torch.arange(1000, dtype=torch.float32)
    save_checkpoint({"step": 3, "model": {"w": w}}, path)
    assert torch.equal(load_checkpoint(path)["model"]["w"], w)
    data = bytearray(open(path, "rb").read())
    at = data.find(w[500:502].numpy().tobytes())   # inside the tensor's storage
    assert at > 0
    data[at] ^= 0x10
    open(path, "wb").write(bytes(data))
    assert torch.load(path, weights_only=True)["step"] == 3   # torch itself loads it without complaint
    with pytest.raises(CheckpointError, match="c.pt is corrupted: its contents do not match the checksum"):
        load_checkpoint(path)
    assert open(path, "rb").read() == bytes(data)


def test_a_fresh_run_never_adopts_an_older_runs_checkpoint(tmp_path, capsys):  # item 8, first half
    vae(tmp_path, 5, "--estimator", "disarm", "--checkpoint-every", "5")
    # a new run in the same folder, killed before its first checkpoint (simulated: it runs 0 of its steps
    # to a checkpoint), then resumed: it must not continue the disarm run's weights
    training.prepare_out(str(tmp_path), resume=False, force=True)
    assert not (tmp_path / "checkpoint.pt").exists() and (tmp_path / "checkpoint.pt.previous").exists()
    with pytest.raises(SystemExit):
        vae(tmp_path, 10, "--estimator", "reinforce", "--resume")
    assert "no checkpoint to resume from" in capsys.readouterr().err


class Killed(BaseException):
    pass


def test_metrics_rows_match_an_uninterrupted_run_when_checkpoints_fall_between_logs(tmp_path, monkeypatch):  # item 8
    cadence = ["--log-every", "4", "--checkpoint-every", "3"]
    vae(tmp_path / "once", 12, *cadence)
    calls, real = {"n": 0}, vae_module.BernoulliVAE.loss

    def dies_at_step_8(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 8:
            raise Killed
        return real(self, *a, **k)

    monkeypatch.setattr(vae_module.BernoulliVAE, "forward", dies_at_step_8)
    with pytest.raises(Killed):   # checkpoint at 6; the row at step 4 written; the window of steps 5-6 unlogged
        vae(tmp_path / "cut", 12, *cadence)
    monkeypatch.undo()
    with open(tmp_path / "cut" / "metrics.csv", "a") as fh:
        fh.write("8,-40.0,0.5")                 # a row written past the checkpoint and cut short by the kill
    vae(tmp_path / "cut", 12, *cadence, "--resume")
    assert rows(tmp_path / "cut") == rows(tmp_path / "once")


def test_resume_refuses_another_configuration_unless_forced(tmp_path, capsys):  # item 9
    vae(tmp_path, 3, "--checkpoint-every", "3")
    before = (tmp_path / "checkpoint.pt").read_bytes()
    for flag in (["--estimator", "reinforce"], ["--lr", "0.01"], ["--seed", "1"], ["--batch-size", "4"],
                 ["--model", "nonlinear"], ["--dataset", "mnist"]):
        with pytest.raises(SystemExit):
            vae(tmp_path, 6, "--resume", *flag)
        err = capsys.readouterr().err
        assert "was written by a run with" in err and "--force-resume" in err, flag
        assert flag[0][2:].replace("-", "_") in err, flag
        assert (tmp_path / "checkpoint.pt").read_bytes() == before
    with pytest.raises(SystemExit):  # forcing cannot fit another model's weights: a clear error, no traceback
        vae(tmp_path, 6, "--force-resume", "--model", "nonlinear")
    assert "does not fit this command's model" in capsys.readouterr().err
    assert vae(tmp_path, 4, "--force-resume", "--lr", "0.01", "--seed", "1") == 0
    assert load_checkpoint(str(tmp_path / "checkpoint.pt"))["optimizer"]["param_groups"][0]["lr"] == 0.01


def test_a_diverged_run_is_stopped_and_never_checkpointed(tmp_path, capsys):  # item 10
    vae(tmp_path, 4, "--checkpoint-every", "2")
    with pytest.raises(SystemExit) as stop:
        vae(tmp_path, 8, "--checkpoint-every", "1", "--lr", "1e30", "--force-resume")
    assert stop.value.code != 0
    err = capsys.readouterr().err
    assert "training diverged by step 5" in err and "last good checkpoint (step 4) is kept" in err
    state = load_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert state["step"] == 4
    with pytest.raises(training.NonFiniteError, match="model.w holds NaN or inf"):
        save_checkpoint({"step": 1, "model": {"w": torch.tensor([1.0, float("inf")])}}, str(tmp_path / "x.pt"))
    assert not (tmp_path / "x.pt").exists()


def test_rbm_with_an_absurd_learning_rate_does_not_exit_0(tmp_path, capsys):  # item 10
    with pytest.raises(SystemExit) as stop:
        main(["train", "rbm", "--dataset", "digits", "--hidden", "8", "--steps", "3", "--batch-size", "10",
              "--lr", "1e30", "--out", str(tmp_path), "--quiet"])
    assert stop.value.code != 0 and "training diverged" in capsys.readouterr().err


def test_a_failed_write_removes_its_temp_file_and_says_no_space_left(tmp_path, monkeypatch):  # item 11
    path = str(tmp_path / "checkpoint.pt")
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    good = open(path, "rb").read()
    real_fdopen = os.fdopen

    class Full:   # a file that takes 10 bytes, then the disk is full
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

        def write(self, data):
            self.fh.write(bytes(data)[:10])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    from stochgrad import files

    monkeypatch.setattr(files.os, "fdopen", lambda fd, *a, **k: Full(real_fdopen(fd, *a, **k)))
    with pytest.raises(CheckpointError, match="no space left on the device.*temporary file was removed.*intact"):
        save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["checkpoint.pt"] and open(path, "rb").read() == good


def test_stale_temp_files_of_killed_writers_are_cleaned_up(tmp_path):  # item 11
    dead = tmp_path / "checkpoint.pt.tmp.999999999"
    dead.write_bytes(b"partial")
    mine = tmp_path / f"checkpoint.pt.tmp.{os.getppid()}"   # a live process's: left alone
    mine.write_bytes(b"in progress")
    training.prepare_out(str(tmp_path), resume=True)
    assert not dead.exists() and mine.exists()


# ---- a valid checksum over the wrong contents: refused in words, the file left alone ----------------------
TRAINERS = {
    "rbm": ["--dataset", "digits", "--hidden", "6", "--batch-size", "10"],
    "hashing": ["--dataset", "digits", "--bits", "6", "--batch-size", "10"],
    "bandit": ["--batch-size", "8"],
    "gating": ["--dataset", "digits", "--batch-size", "64"],
    "vae": ARGS[:-1],
}


def _rewrite(path, change):
    state = load_checkpoint(str(path))
    change(state)
    save_checkpoint(state, str(path))   # a fresh, valid checksum over the changed contents
    return path.read_bytes()


WRONG = {   # a contents change a valid checksum covers, and the words that refuse it
    "negative step": (lambda s: s.update(step=-5), "step must be an integer >= 0, got -5"),
    "fractional step": (lambda s: s.update(step=2.5), "step must be an integer >= 0, got 2.5"),
    "missing entry": (lambda s: s.pop("generator"), "KeyError: 'generator'"),
    "negative time": (lambda s: s.update(seconds=-1.0), "seconds must be a finite number >= 0"),
    "another shape": (lambda s: s["model"].update({k: v[..., :1] for k, v in list(s["model"].items())[:1]}),
                      "size mismatch"),
}


@pytest.mark.parametrize("kind, wrong", [(k, "negative step") for k in TRAINERS] +
                         [(k, w) for k in ("gating", "rbm") for w in WRONG if w != "negative step"])
def test_a_checkpoint_with_the_wrong_contents_is_refused(kind, wrong, tmp_path, capsys):
    change, words = WRONG[wrong]
    argv = ["train", kind, "--out", str(tmp_path), "--quiet", *TRAINERS[kind]]
    assert main([*argv, "--steps", "4", "--checkpoint-every", "2"]) == 0
    kept = _rewrite(tmp_path / "checkpoint.pt", change)
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--steps", "6", "--resume"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and "does not fit" in err and words in err, err
    assert (tmp_path / "checkpoint.pt").read_bytes() == kept


def test_persistent_chains_of_another_shape_are_refused(tmp_path, capsys):
    argv = ["train", "rbm", "--out", str(tmp_path), "--quiet", *TRAINERS["rbm"]]
    assert main([*argv, "--steps", "4"]) == 0
    _rewrite(tmp_path / "checkpoint.pt", lambda s: s.update(chains=s["chains"][:3]))
    with pytest.raises(SystemExit):
        main([*argv, "--steps", "6", "--resume"])
    assert "persistent chains of shape (3, 64), this run's are (10, 64)" in capsys.readouterr().err
