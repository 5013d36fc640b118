"""`stochgrad train gating` on small data: every gater trains and reports; the threshold is chosen on
validation data only; the gates are input-dependent; resume is exact."""
import json

import pytest
import torch

from stochgrad import data as D
from stochgrad.cli import main
from stochgrad.studies import gating
from stochgrad.studies.gating import GATERS, GatingNet, input_dependence


def run(out, *extra):
    return main(["train", "gating", "--dataset", "digits", "--out", str(out), "--quiet", *extra])


@pytest.mark.parametrize("gater", GATERS)
def test_every_gater_trains_and_reports(tmp_path, gater):
    assert run(tmp_path, "--gater", gater, "--epochs", "1") == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0 <= summary["test_error_percent"] < 90     # better than chance (90%) after one epoch of 37 steps
    assert summary["threshold_chosen_on"] == "validation" and summary["epochs"] == 1
    assert 0 < summary["test_open_fraction"] < 0.3
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and (tmp_path / "curves.png").exists()


def test_the_threshold_never_sees_test_data(tmp_path, monkeypatch):
    seen = []
    real = GatingNet.threshold_for

    def spy(self, x, open_fraction):
        seen.append(x.clone())
        return real(self, x, open_fraction)

    monkeypatch.setattr(GatingNet, "threshold_for", spy)
    run(tmp_path, "--gater", "straight_through", "--epochs", "2")
    test = D.load("digits", "test").images
    valid = D.load("digits", "train").images[1200:]          # digits: 1,500 training images, the last 300 validate
    assert len(seen) == 3
    for x in seen:
        assert torch.equal(x, valid)
        assert not (x.unsqueeze(1) == test.unsqueeze(0)).all(-1).any()   # no test image among them


def test_test_time_gates_leave_the_target_fraction_open():
    torch.manual_seed(0)
    net = GatingNet(64, "straight_through", gates=50, hidden=20).eval()
    x, y = torch.rand(200, 64), torch.randint(0, 10, (200,))
    threshold = net.threshold_for(x, 0.1)
    _, patterns = net.evaluate(x, y, threshold)
    assert patterns.float().mean().item() == pytest.approx(0.1, abs=1e-3)


def test_input_dependence_separates_conditional_from_input_independent_gates():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (2000,), generator=g)
    prototypes = torch.rand(10, 500, generator=g) < 0.1
    flips = torch.rand(2000, 500, generator=g) < 0.02
    conditional = prototypes[labels] ^ flips                      # each class opens its own gates
    rate = conditional.float().mean().item()
    fixed = (torch.arange(500) < int(rate * 500)).expand(2000, -1)  # the same gates for every input
    dropout = torch.rand(2000, 500, generator=g) < rate             # random gates, input ignored
    c = input_dependence(conditional, labels, generator=torch.Generator().manual_seed(1))["class_contrast"]
    f = input_dependence(fixed, labels, generator=torch.Generator().manual_seed(1))["class_contrast"]
    d = input_dependence(dropout, labels, generator=torch.Generator().manual_seed(1))["class_contrast"]
    assert c > 0.5 and abs(f) < 0.05 and abs(d) < 0.05


def test_gates_of_another_example_change_nothing_when_the_gates_ignore_the_input():
    """The control of the check above: a gater that ignores its input opens the same gates for every example,
    so classifying each example through another example's gates gives exactly the same error."""
    torch.manual_seed(0)
    net = GatingNet(64, "straight_through", gates=50, hidden=20).eval()
    with torch.no_grad():
        net.gater[0].weight.zero_()                                 # pre-activations no longer depend on x
    x, y = torch.rand(300, 64), torch.randint(0, 10, (300,))
    threshold = net.threshold_for(x, 0.1)
    own, patterns = net.evaluate(x, y, threshold)
    other, _ = net.evaluate(x, y, threshold, donors=torch.randperm(300))
    assert (patterns == patterns[0]).all() and other == own


def test_sigmoid_gates_start_at_the_target_rate():
    for gater, p_open in (("straight_through", 0.1), ("reinforce_optimal", 0.1), ("stochastic_times_smooth", 0.1)):
        net = GatingNet(64, gater, gates=50, hidden=20)
        p = net.open_probability(net.gater[2].bias.detach())
        assert torch.allclose(p, torch.full_like(p, p_open)), gater


def test_after_a_short_run_on_digits_the_gates_depend_on_the_input(tmp_path):
    """Straight-through, 10 epochs on digits: the test gate patterns are closer within a class than across
    classes. The same check fails for input-independent gates at the same rate (fixed or random)."""
    run(tmp_path, "--gater", "straight_through", "--epochs", "10")
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["test_class_contrast"] > 0.1, s
    # the classifier uses them: through another example's gates the error rises (measured 20% -> 84-88%, 3 seeds)
    assert s["test_error_percent_gates_of_another_example"] > s["test_error_percent"] + 20, s
    assert s["test_hamming"] > 0.25 * s["test_hamming_independent"]   # not one fixed set of gates
    rate = s["test_open_fraction"]
    labels = D.load("digits", "test").labels
    n = len(labels)
    g = torch.Generator().manual_seed(0)
    for control in ((torch.arange(2000) < int(rate * 2000)).expand(n, -1), torch.rand(n, 2000, generator=g) < rate):
        assert input_dependence(control, labels, generator=torch.Generator().manual_seed(0))["class_contrast"] < 0.1


def test_resume_is_exact(tmp_path):
    """The unbiased gater (its estimator's baseline is state too): 2 epochs, or 1 and then 1 more resumed."""
    gater = "reinforce_optimal"
    run(tmp_path / "once", "--gater", gater, "--epochs", "2")
    run(tmp_path / "twice", "--gater", gater, "--epochs", "1")
    run(tmp_path / "twice", "--gater", gater, "--epochs", "2", "--resume")
    a = torch.load(tmp_path / "once" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "twice" / "checkpoint.pt", weights_only=False)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    sa, sb = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("once", "twice"))
    for s in (sa, sb):
        s.pop("train_seconds"), s.pop("environment")
    assert sa == sb


def test_bad_flags_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run(tmp_path, "--gater", "nope")
    assert "valid: straight_through, reinforce_optimal" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(tmp_path, "--target", "1.5")
    assert "--target" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(tmp_path, "--gater", "sigmoid", "--rate-control")
    assert "rate-control" in capsys.readouterr().err


def test_relu_experts_rectify_the_expert_path_and_guard_resume(tmp_path, capsys):
    """``--expert relu`` (a flagged deviation) rectifies the expert units and nothing else; a run cannot
    be resumed with the other expert path, and a checkpoint written before the flag existed (its stored
    configuration lacks ``expert``) resumes as the default, linear."""
    torch.manual_seed(0)
    x = torch.rand(5, 64)
    lin, rel = (GatingNet(64, "sigmoid", gates=30, hidden=8, expert=e) for e in ("linear", "relu"))
    rel.load_state_dict(lin.state_dict())
    lin.eval(), rel.eval()
    e = lin.expert(x)
    assert (e < 0).any()
    assert torch.allclose(lin(x)[0], lin.out(e * torch.sigmoid(lin.gater(x))))
    assert torch.allclose(rel(x)[0], rel.out(torch.relu(e) * torch.sigmoid(rel.gater(x))))
    with pytest.raises(SystemExit):
        run(tmp_path, "--expert", "tanh")
    assert "--expert" in capsys.readouterr().err
    with pytest.raises(ValueError, match="expert"):
        gating.GatingConfig(expert="tanh")
    assert run(tmp_path, "--gater", "sigmoid", "--epochs", "1", "--expert", "relu") == 0
    assert json.loads((tmp_path / "summary.json").read_text())["expert"] == "relu"
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(SystemExit):
        run(tmp_path, "--gater", "sigmoid", "--epochs", "2", "--resume")
    assert "expert='relu'" in capsys.readouterr().err and (tmp_path / "checkpoint.pt").read_bytes() == before

    from stochgrad.studies.training import load_checkpoint, save_checkpoint
    old = tmp_path / "old"
    assert run(old, "--gater", "sigmoid", "--epochs", "1") == 0
    state = load_checkpoint(str(old / "checkpoint.pt"))
    del state["config"]["expert"]
    save_checkpoint(state, str(old / "checkpoint.pt"))
    assert run(old, "--gater", "sigmoid", "--epochs", "2", "--resume") == 0
    with pytest.raises(SystemExit):
        run(old, "--gater", "sigmoid", "--epochs", "3", "--resume", "--expert", "relu")
    assert "with expert='linear'" in capsys.readouterr().err   # the default stands for the missing setting


def test_gating_snr_benchmark_runs_on_a_checkpoint(tmp_path):
    """benchmarks/gating_snr.py (what limits the unbiased gater) reads a gating checkpoint and reports both
    estimators; on one batch the unbiased estimate is noisier than straight-through's."""
    import importlib.util
    import os
    import sys
    assert run(tmp_path, "--gater", "reinforce_optimal", "--epochs", "1") == 0
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "gating_snr.py")
    spec = importlib.util.spec_from_file_location("gating_snr", path)
    snr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(snr)
    argv = sys.argv
    sys.argv = ["gating_snr", str(tmp_path / "checkpoint.pt"), "--dataset", "digits", "--estimates", "8",
                "--batch", "16", "--json", str(tmp_path / "snr.json")]
    try:
        snr.main()
    finally:
        sys.argv = argv
    rows = json.loads((tmp_path / "snr.json").read_text())["rows"]
    assert rows["reinforce_optimal"]["noise"] > rows["straight_through"]["noise"] > 0
