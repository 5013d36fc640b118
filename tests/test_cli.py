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
    r = subprocess.run([sys.executable, "-m", "stochgrad", "check", "--estimators", "DisARM"], capture_output=True,
                       text=True)
    assert "did you mean 'disarm'?" in r.stderr and "see stochgrad check --help" in r.stderr


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


# ---- the train commands: one set of flags, one resume rule, clear words ------------------------------------
import errno  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

TINY = {   # each trainer at a size that runs in a second
    "rbm": ["--dataset", "digits", "--hidden", "8", "--batch-size", "10"],
    "hashing": ["--dataset", "digits", "--bits", "8", "--batch-size", "10"],
    "bandit": ["--batch-size", "8"],
    "gating": ["--dataset", "digits", "--batch-size", "64"],
    "vae": ["--dataset", "digits", "--test-examples", "40", "--test-samples", "4"],
}


def train(kind, out, *extra):
    return main(["train", kind, "--out", str(out), "--quiet", *TINY[kind], *extra])


@pytest.mark.parametrize("kind", list(TINY))
def test_resume_runs_to_the_checkpoints_own_target_and_says_when_there_is_nothing_to_do(kind, tmp_path, capsys):
    assert train(kind, tmp_path, "--steps", "12", "--checkpoint-every", "5") == 0
    first = (tmp_path / "summary.json").read_bytes()
    capsys.readouterr()
    assert train(kind, tmp_path, "--resume") == 0            # no --steps: the checkpoint's own 12, already reached
    out = capsys.readouterr().out
    assert "already complete" in out and "step 12" in out
    assert (tmp_path / "summary.json").read_bytes() == first   # nothing re-evaluated, nothing rewritten
    assert train(kind, tmp_path, "--resume", "--steps", "15") == 0   # told otherwise: on to 15
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 15
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 15


@pytest.mark.parametrize("kind", list(TINY))
def test_every_trainer_takes_the_same_flags(kind, tmp_path):
    from stochgrad.cli import build_parser

    parser = build_parser()
    for flags in (["--steps", "3"], ["--force-resume"], ["--force"], ["--batch-size", "4"], ["--lr", "0.1"],
                  ["--checkpoint-every", "2"], ["--log-every", "2"], ["--seed", "1"], ["--tensorboard"]):
        parser.parse_args(["train", kind, *flags])   # each parses (a wrong one would exit)
    assert train(kind, tmp_path, "--steps", "4") == 0
    # --force-resume continues a checkpoint written with other identity settings (here: the seed)
    assert train(kind, tmp_path, "--steps", "6", "--seed", "7", "--force-resume") == 0


def test_a_fresh_run_refuses_an_earlier_runs_folder_unless_forced(tmp_path, capsys):
    assert train("rbm", tmp_path, "--steps", "3") == 0
    before = {f: (tmp_path / f).read_bytes() for f in ("checkpoint.pt", "metrics.csv", "summary.json")}
    with pytest.raises(SystemExit) as stop:
        train("rbm", tmp_path, "--steps", "3", "--seed", "1")
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "holds an earlier run" in err and "--resume" in err and "--force" in err
    assert all((tmp_path / f).read_bytes() == b for f, b in before.items())   # nothing overwritten
    assert train("rbm", tmp_path, "--steps", "3", "--force") == 0
    assert (tmp_path / "checkpoint.pt.previous").read_bytes() == before["checkpoint.pt"]
    assert train("rbm", tmp_path, "--steps", "3", "--force", "--seed", "2") == 0   # a second slip: both kept
    assert (tmp_path / "checkpoint.pt.previous.2").read_bytes() == before["checkpoint.pt"]


def test_outputs_are_never_written_through_a_link_planted_in_out(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    for name in ("summary.json", "curves.png", "metrics.csv", "samples.png"):
        os.symlink(victim, out / name)
    assert train("rbm", out, "--steps", "3", "--force") == 0
    assert victim.read_text() == "precious"
    assert not any(os.path.islink(out / n) for n in ("summary.json", "curves.png", "metrics.csv", "samples.png"))
    assert json.loads((out / "summary.json").read_text())["steps"] == 3


@pytest.mark.parametrize("flag", ["--seed", "--threads", "--samples", "--latents", "--batch-size", "--test-samples",
                                  "--steps", "--log-every"])
def test_integers_past_any_size_are_one_line_usage_errors(flag, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "vae", "--quiet", flag, str(10 ** 20)])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and f"argument {flag}" in err, err
    assert "see stochgrad train vae --help" in err


@pytest.mark.parametrize("argv", [["train", "rbm", "--hidden"], ["train", "hashing", "--bits"],
                                  ["train", "bandit", "--hidden"], ["compare", "--seed"], ["check", "--samples"]])
def test_other_commands_refuse_integers_past_any_size(argv, capsys):
    with pytest.raises(SystemExit):
        main([*argv, str(10 ** 20)])
    assert f"argument {argv[-1]}: must be at most" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["gating", "hashing", "bandit"])
def test_an_absurd_learning_rate_stops_as_training_diverged(kind, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        train(kind, tmp_path, "--steps", "20", "--lr", "1e20")
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "training diverged by step" in err and "(lower --lr)" in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("kind", ["rbm", "hashing", "bandit", "gating"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_disk_or_read_only_folder_is_one_clear_line(kind, code, tmp_path, capsys, monkeypatch):
    from stochgrad import files

    real = files.os.open

    def refuse(path, flags, *args, **kwargs):
        if ".tmp." in str(path) and "summary.json" in str(path):
            raise OSError(code, os.strerror(code))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(files.os, "open", refuse)
    with pytest.raises(SystemExit) as stop:
        train(kind, tmp_path, "--steps", "3")
    err = capsys.readouterr().err.strip()
    words = "no space left on the device" if code == errno.ENOSPC else "read-only file system"
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and words in err and "summary.json" in err, err


def test_a_read_only_out_folder_that_cannot_be_created(tmp_path, capsys, monkeypatch):
    real = os.makedirs

    def refuse(path, *a, **k):
        if str(path).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(path, *a, **k)

    monkeypatch.setattr(os, "makedirs", refuse)
    for argv in (["train", "bandit", "--steps", "2", "--out", str(tmp_path / "x"), "--quiet"],
                 ["compare", "--quick", "--out", str(tmp_path / "y"), "--quiet"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert stop.value.code == 2 and "read-only file system" in err and len(err.splitlines()) == 1, err


def test_usage_errors_point_to_the_subcommands_help(capsys):
    for argv, prog in ((["train", "vae", "--no-such-flag"], "stochgrad train vae"), (["train"], "stochgrad train"),
                       (["compare", "--lr", "1"], "stochgrad compare"), (["train", "gating", "--gater", "sigmoidd"],
                                                                        "stochgrad train gating")):
        with pytest.raises(SystemExit):
            main(argv)
        err = capsys.readouterr().err
        assert err.startswith(f"{prog}: error:") and f"(see {prog} --help)" in err, err
    assert "did you mean 'sigmoid'?" in err


@pytest.mark.skipif(torch.version.cuda is not None, reason="a CPU-only build of torch says why cuda is refused")
def test_cuda_on_a_cpu_build_says_why(capsys):
    with pytest.raises(SystemExit):
        main(["train", "vae", "--device", "cuda"])
    err = capsys.readouterr().err
    assert "CPU-only build" in err and torch.__version__ in err


def test_help_shows_no_default_for_switches(capsys):
    with pytest.raises(SystemExit):
        main(["train", "vae", "--help"])
    out = capsys.readouterr().out
    assert "(default: True)" not in out and "(default: False)" not in out and "--no-train-bound" in out


def test_estimators_table_has_a_legend_and_the_true_costs(capsys):
    assert main(["estimators"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["estimator", "unbiased", "as"]
    for name in ("double_cv", "rodeo"):
        row = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert "S + backward, S >= 2" in row
    assert "S = samples" in out and "needs L" in out and "pathwise =" in out


def test_long_phases_show_progress(tmp_path, capsys):
    """Gating moves its bar every batch; the final evaluations have their own bars."""
    main(["train", "gating", "--out", str(tmp_path / "g"), *TINY["gating"], "--steps", "30"])
    err = capsys.readouterr().err
    assert "30/30" in err and "final evaluation" in err
    main(["train", "vae", "--out", str(tmp_path / "v"), *TINY["vae"], "--steps", "3"])
    assert "4-sample bound on 40 test and training images" in capsys.readouterr().err


def test_the_run_record_takes_no_lock_in_the_users_checkout(tmp_path):
    import subprocess
    import time

    from stochgrad.runinfo import git_commit

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.txt").write_text("a")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    time.sleep(1.1)
    os.utime(repo / "a.txt")   # stat data changed: a plain `git status` rewrites the index (under index.lock)
    index = repo / ".git" / "index"
    before = index.stat().st_mtime_ns
    assert git_commit(str(repo))[0]
    assert index.stat().st_mtime_ns == before and not (repo / ".git" / "index.lock").exists()


def test_an_interrupted_compare_says_how_to_finish_it(tmp_path, capsys, monkeypatch):
    from stochgrad.studies import compare

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(compare, "run", interrupted)
    assert main(["compare", "--quick", "--out", str(tmp_path), "--quiet"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "progress.json" in err and "--resume finishes it" in err
