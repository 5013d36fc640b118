"""RBMs (seed §4.2): reward correlation = X⁺ − X⁻, CD-1's known bias, PCD ≈ exact, AIS ≈ exact log Z."""
import math

import pytest
import torch

from stochgrad.boltzmann import (RBM, ContrastiveDivergence, ais_log_partition, exact_gradient,
                                 positive_minus_negative, reward_correlation)
from stochgrad.exact import all_states, log_prob

NV, NH = 6, 4


def small_rbm(seed=0):
    torch.manual_seed(seed)
    r = RBM(NV, NH, init_std=1.0).double()
    with torch.no_grad():
        r.b.normal_()
        r.c.normal_()
    g = torch.Generator().manual_seed(seed + 1)
    data = (torch.rand(8, NV, generator=g, dtype=torch.float64) < 0.5).double()
    return r, data


def test_reward_correlation_equals_positive_minus_negative_sample_for_sample():
    g = torch.Generator().manual_seed(0)
    v1, h1, v2, h2 = [(torch.rand(50, n, generator=g) < 0.5).double() for n in (NV, NH, NV, NH)]
    a, b = reward_correlation(v1, h1, v2, h2), positive_minus_negative(v1, h1, v2, h2)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-12)


def test_exact_log_partition_by_either_layer_and_brute_force():
    r, _ = small_rbm()
    v, h = all_states(NV, r.W), all_states(NH, r.W)
    energy = -(v @ r.b).unsqueeze(1) - (h @ r.c).unsqueeze(0) - v @ r.W @ h.T
    brute = torch.logsumexp(-energy.reshape(-1), 0)
    assert torch.allclose(r.log_partition(), brute)
    wide = RBM(NH, NV).double()     # visible smaller than hidden: the other enumeration branch
    with torch.no_grad():
        wide.W.copy_(r.W.T), wide.b.copy_(r.c), wide.c.copy_(r.b)
    assert torch.allclose(wide.log_partition(), brute)


def test_ais_agrees_with_the_exact_partition_function():
    torch.manual_seed(1)
    r = RBM(25, 8, init_std=1.0).double()
    estimate, rel_se = ais_log_partition(r, betas=1000, runs=400, generator=torch.Generator().manual_seed(0))
    assert abs(estimate - r.log_partition().item()) < 4 * rel_se + 0.01


def exact_cd1_expectation(r, data):
    """E[CD-1 update] by enumeration: h ~ p(h|v), v' ~ p(v'|h), h' ~ p(h'|v'), averaged exactly."""
    hs, vs = all_states(NH, r.W), all_states(NV, r.W)
    q = r.hidden_probs(data)                                         # (N, NH)
    p_h = log_prob(hs.unsqueeze(0), torch.logit(q).unsqueeze(1)).exp()   # (N, 2^NH)
    p_v = log_prob(vs.unsqueeze(0), (hs @ r.W.T + r.b).unsqueeze(1)).exp()  # (2^NH, 2^NV)
    w = p_h @ p_v                                                    # (N, 2^NV): law of v'
    qv = r.hidden_probs(vs)                                          # E[h' | v']
    neg = {"W": torch.einsum("nk,ki,kj->ij", w, vs, qv) / len(data), "b": (w @ vs).mean(0), "c": (w @ qv).mean(0)}
    pos = {"W": data.T @ q / len(data), "b": data.mean(0), "c": q.mean(0)}
    return {k: pos[k] - neg[k] for k in pos}


def stack(d):
    return torch.cat([d[k].reshape(-1) for k in ("W", "b", "c")])


def test_cd1_matches_its_exact_expectation_and_shows_its_bias():
    r, data = small_rbm()
    with torch.no_grad():
        expected = stack(exact_cd1_expectation(r, data))
    exact = stack({k: v.detach() for k, v in exact_gradient(r, data).items()})
    cd = ContrastiveDivergence(r, k=1, generator=torch.Generator().manual_seed(0))
    reps = data.repeat(500, 1)
    samples = torch.stack([stack(cd.gradient(reps)) for _ in range(200)])   # each: mean over 4000 chains
    se = samples.std(0) / math.sqrt(len(samples))
    assert ((samples.mean(0) - expected) / se).abs().max() < 4          # the implementation is CD-1
    assert ((samples.mean(0) - exact) / se).abs().max() > 6             # and CD-1 is biased
    assert (expected - exact).norm() > 0.05


def test_pcd_with_long_chains_reaches_the_exact_gradient():
    r, data = small_rbm()
    exact = stack({k: v.detach() for k, v in exact_gradient(r, data).items()})
    pcd = ContrastiveDivergence(r, k=300, persistent=True, generator=torch.Generator().manual_seed(0))
    reps = data.repeat(500, 1)
    pcd.gradient(reps)                      # burn-in: 4000 chains, 300 Gibbs steps
    pcd.k = 20                              # then snapshots 20 steps apart
    samples = torch.stack([stack(pcd.gradient(reps)) for _ in range(40)])
    se = samples.std(0) / math.sqrt(len(samples))
    assert ((samples.mean(0) - exact) / se).abs().max() < 4


def test_cd_training_raises_the_exact_likelihood():
    r, data = small_rbm()
    before = r.log_likelihood(data).item()
    cd = ContrastiveDivergence(r, k=1, persistent=True, generator=torch.Generator().manual_seed(0))
    for _ in range(300):
        cd.step(data.repeat(20, 1), lr=0.05)
    assert r.log_likelihood(data).item() > before + 0.5


def test_exact_log_partition_refuses_large_models():
    with pytest.raises(ValueError, match="<= 20 units"):
        RBM(30, 30).log_partition()


def test_train_rbm_command(tmp_path):
    import json

    from stochgrad.cli import main

    assert main(["train", "rbm", "--dataset", "digits", "--hidden", "12", "--steps", "200", "--out", str(tmp_path),
                 "--quiet"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["log_partition_method"] == "exact" and summary["test_log_likelihood"] < 0
    assert (tmp_path / "samples.png").exists() and (tmp_path / "curves.png").exists()
