"""Issue 14: exact's memory is bounded, check_unbiased and the command line refuse meaningless values, a
delayed reward cannot reach the wrong step, misuse of the broadcast is not silent (items 5-7, 14, 16)."""
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn

import stochgrad as sg
from stochgrad import problems
from stochgrad.boltzmann import RBM, ais_log_partition
from stochgrad.checks import check_unbiased
from stochgrad.cli import main
from stochgrad.exact import exact_gradient


def test_exact_at_n20_batch64_fits_in_6_gib(tmp_path):  # item 5
    script = textwrap.dedent("""
        import resource, torch
        torch.set_num_threads(1)
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
        from stochgrad.exact import exact_expectation, exact_gradient
        n, batch = 20, 64
        logits = torch.linspace(-2, 2, n).repeat(batch, 1) + torch.linspace(0, 1, batch)[:, None]
        f = lambda b: (b[..., 0] - 2 * b[..., 1] * b[..., 2] - 0.5).square()   # non-separable, reads 3 units
        value, grad = exact_gradient(f, logits)
        # with u = b1 b2 and q = E u = p1 p2: f = 0.25 + 6u - 4u b0, so E f = 0.25 + 6q - 4 p0 q
        p0, p1, p2 = torch.sigmoid(logits[:, :3]).unbind(-1)
        q = p1 * p2
        assert torch.allclose(value, 0.25 + 6 * q - 4 * p0 * q, atol=1e-4), "value"
        expected = torch.zeros_like(grad)
        expected[:, 0] = -4 * q * p0 * (1 - p0)
        expected[:, 1] = (6 - 4 * p0) * p2 * p1 * (1 - p1)
        expected[:, 2] = (6 - 4 * p0) * p1 * p2 * (1 - p2)
        assert torch.allclose(grad, expected, atol=1e-4), (grad - expected).abs().max()
        print("ok")
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_chunked_exact_matches_one_call(monkeypatch, gen):  # item 5: chunks change nothing but memory
    p = problems.suite()[1]
    logits = p.logits.expand(3, -1).clone()
    one = exact_gradient(p.f, logits)
    monkeypatch.setattr("stochgrad.exact.CHUNK_ELEMENTS", 40)   # chunks of two or three states
    value = sg.expect(p.f, logits.clone().requires_grad_(True), "exact")
    chunked = exact_gradient(p.f, logits)
    assert torch.allclose(one[0], chunked[0], atol=1e-12) and torch.allclose(one[1], chunked[1], atol=1e-12)
    assert torch.allclose(value.detach(), one[0], atol=1e-12)


@pytest.mark.parametrize("kwargs, match", [(dict(threshold=float("nan")), "threshold"),
                                           (dict(threshold=float("inf")), "threshold"),
                                           (dict(threshold=-1.0), "threshold"),
                                           (dict(estimates=29), "estimates must be an integer >= 30"),
                                           (dict(estimates=100, batch=0), "batch must be an integer >= 1"),
                                           (dict(samples=0), "samples must be an integer >= 1"),
                                           (dict(warmup=-1), "warmup must be an integer >= 0")])
def test_check_unbiased_refuses_meaningless_settings(kwargs, match):  # item 6
    p = problems.suite()[0]
    with pytest.raises(ValueError, match=match):
        check_unbiased("straight_through", p.f, p.logits, **{"estimates": 100, **kwargs})
    with pytest.raises(TypeError, match="estimates must be an integer"):
        check_unbiased("reinforce", p.f, p.logits, estimates=10.5)


def test_exact_is_not_reported_biased(capsys):  # item 16
    assert main(["check", "--estimators", "exact", "--estimates", "200", "--batch", "100", "--quiet"]) == 0
    assert "unbiased: ok" in capsys.readouterr().out
    p = problems.suite()[0]   # a biased deterministic estimate is still caught at rounding resolution
    r = check_unbiased("exact", lambda b: p.f(b) * (1 + 1e-9), p.logits, estimates=30)
    r.exact = exact_gradient(p.f, p.logits)[1]
    assert r.bias_detected


def _delayed_net(gen):
    return nn.Sequential(nn.Linear(3, 4), sg.StochasticBinary("reinforce", generator=gen), nn.Linear(4, 1))


def test_delayed_reward_cannot_reach_the_wrong_step(gen):  # item 7
    net, x = _delayed_net(gen), torch.ones(5, 3)
    delayed = sg.DelayedBroadcast(delay=1)
    with delayed.step() as s0:
        net(x)
    with delayed.step() as s1:
        net(x)
    # deliver, then record: the natural order; the reward of s0 is lost, s1's arrives
    with pytest.raises(RuntimeError, match="reward for step 1 arrived while step 0 still awaits"):
        delayed.deliver(torch.ones(5), s1)
    delayed.deliver(torch.ones(5), s0)
    with pytest.raises(RuntimeError, match="already delivered"):
        delayed.deliver(torch.ones(5), s0)
    with pytest.raises(TypeError, match="handle yielded by DelayedBroadcast.step"):
        delayed.deliver(torch.ones(5), "step 1")
    delayed.deliver(torch.ones(5), s1)
    assert len(delayed) == 0
    # without handles: a reward delivered before `delay` later steps were recorded is refused
    with delayed.step():
        net(x)
    with pytest.raises(RuntimeError, match="a reward was lost, duplicated or delivered early"):
        delayed.deliver(torch.ones(5))
    with pytest.raises(ValueError):   # a bad loss leaves the step pending
        delayed.deliver(torch.full((5,), float("nan")), delayed.pending[0])
    assert len(delayed) == 1
    delayed.discard()


def test_a_plain_backward_inside_broadcast_warns(gen):  # item 16
    net, x = _delayed_net(gen), torch.ones(5, 3)
    with pytest.warns(RuntimeWarning, match="dropped before their loss was delivered") as seen:
        with sg.broadcast() as graph:
            h = net(x)
        h.sum().backward()   # not graph.backward(h.squeeze(-1)): the first layer gets no gradient
        assert net[0].weight.grad is None
        del graph
    # the warning points at the user's `with sg.broadcast()`, not at wherever the graph was collected
    assert seen[0].filename == __file__
    assert "sg.broadcast()" in open(__file__).read().splitlines()[seen[0].lineno - 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with sg.broadcast() as graph:
            h = net(x)
        graph.backward(h.squeeze(-1))
        del graph
    assert net[0].weight.grad is not None


def test_ais_needs_two_temperatures_and_two_runs():  # item 14
    rbm = RBM(6, 4)
    with pytest.raises(ValueError, match="betas must be >= 2"):
        ais_log_partition(rbm, betas=1)
    with pytest.raises(ValueError, match="runs must be >= 2"):
        ais_log_partition(rbm, betas=10, runs=1)


VAE = ["train", "vae", "--dataset", "digits", "--quiet"]


@pytest.mark.parametrize("argv, flag", [
    (VAE + ["--log-every", "0"], "--log-every"), (VAE + ["--checkpoint-every", "0"], "--checkpoint-every"),
    (VAE + ["--batch-size", "-3"], "--batch-size"), (VAE + ["--batch-size", "0"], "--batch-size"),
    (VAE + ["--lr", "nan"], "--lr"), (VAE + ["--lr", "inf"], "--lr"), (VAE + ["--samples", "0"], "--samples"),
    (VAE + ["--test-samples", "0"], "--test-samples"), (VAE + ["--steps", "-5"], "--steps"),
    (VAE + ["--estimator", "reinforce_loo", "--samples", "1"], "--samples"), (VAE + ["--device", "cuda:7"], "--device"),
    (VAE + ["--device", "tpu"], "--device"),
    (["train", "hashing", "--bits", "0"], "--bits"), (["train", "bandit", "--delay", "-1"], "--delay"),
    (["train", "rbm", "--k", "0"], "--k"), (["check", "--estimates", "1"], "--estimates"),
    (["check", "--threshold", "nan"], "--threshold"), (["compare", "--device", "cuda:7"], "--device"),
])
def test_every_bad_flag_is_one_line_naming_it(argv, flag, capsys):  # item 14
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and f"argument {flag}" in err, err


def test_out_pointing_to_a_file_is_refused(tmp_path, capsys):  # item 14
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises(SystemExit):
        main(VAE + ["--out", str(f)])
    assert "argument --out" in capsys.readouterr().err and f.read_text() == "x"


# ---- the configurations that Python callers build: the command line's checks, from one place ----------------
from stochgrad import options  # noqa: E402
from stochgrad.cli import build_parser  # noqa: E402
from stochgrad.studies import bandit, compare, gating, hashing, rbm, vae  # noqa: E402

CONFIGS = {"vae": vae.VAEConfig, "gating": gating.GatingConfig, "rbm": rbm.RBMConfig, "hashing": hashing.HashingConfig,
           "bandit": bandit.BanditConfig}


@pytest.mark.parametrize("make, name, words", [
    (lambda tmp: vae.VAEConfig(steps=-5, out=tmp), "steps", "must be an integer >= 1, got -5"),
    (lambda tmp: vae.VAEConfig(lr=float("nan"), out=tmp), "lr", "must be a finite number > 0, got nan"),
    (lambda tmp: vae.VAEConfig(estimator="reinforce_loo", samples=1, out=tmp), "samples", "must be >= 2"),
    (lambda tmp: rbm.RBMConfig(k=0, out=tmp), "k", "must be an integer >= 1, got 0"),
    (lambda tmp: bandit.BanditConfig(delay=-1, out=tmp), "delay", "must be an integer >= 0, got -1"),
    (lambda tmp: gating.GatingConfig(target=1.5, out=tmp), "target", "must be a number in (0, 1), got 1.5"),
    (lambda tmp: compare.Config.make(quick=True, race_steps=0), "race_steps", "must be an integer >= 1, got 0"),
    (lambda tmp: vae.VAEConfig(estimator="exact", out=tmp), "estimator", "must be a registered estimator but exact"),
    (lambda tmp: vae.VAEConfig(categories=4, estimator="disarm", out=tmp), "estimator",
     "disarm does not support categorical latents"),
    (lambda tmp: gating.GatingConfig(gater="nope", out=tmp), "gater", "must be one of the gaters"),
    (lambda tmp: bandit.BanditConfig(delay=2, resume=True, out=tmp), "resume", "works with --delay 0 only"),
])
def test_configurations_built_in_python_are_checked_like_flags(make, name, words, tmp_path):
    with pytest.raises(options.OptionError) as err:
        make(str(tmp_path / "run"))
    assert str(err.value) == f"{name} {words}" if "got" in words else str(err.value).startswith(f"{name} {words}")
    with pytest.raises(TypeError, match="batch_size must be an integer >= 1, got 2.5"):
        hashing.HashingConfig(batch_size=2.5)


@pytest.mark.parametrize("train, cfg, field, value", [
    (vae.train_vae, vae.VAEConfig(dataset="digits", steps=3), "batch_size", 0),
    (hashing.train_hashing, hashing.HashingConfig(dataset="digits", steps=3), "lr", float("inf")),
    (bandit.train_bandit, bandit.BanditConfig(steps=3), "steps", -5),
])
def test_a_training_function_checks_its_config_before_it_writes(train, cfg, field, value, tmp_path):
    """A configuration changed after it was built is checked again when training starts, before the out
    folder is even created."""
    cfg.out = str(tmp_path / "run")
    setattr(cfg, field, value)
    with pytest.raises(ValueError, match=f"^{field} must be"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_every_flag_has_its_config_fields_check():
    """One check per setting: a trainer's flag parses with the kind its configuration declares for the field."""
    sub = next(a for a in build_parser()._subparsers._group_actions).choices["train"]
    trainers = next(a for a in sub._subparsers._group_actions).choices
    checked = 0
    for name, cls in CONFIGS.items():
        for action in trainers[name]._actions:
            if action.dest in cls.OPTIONS:
                assert action.type is cls.OPTIONS[action.dest], (name, action.dest)
                checked += 1
    assert checked >= 30
