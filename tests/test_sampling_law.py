"""The categorical sampler is exact in law: masked classes are never drawn, and at vocabulary-size K the draw
follows the softmax (a χ² test), in float32 and bfloat16; −inf logits are masks, +inf/NaN/all-masked units errors."""
import math

import pytest
import torch
from scipy.stats import chi2

import stochgrad as sg
from stochgrad.distributions import CATEGORICAL

INF = float("inf")


def random_masked_states(states: int, K: int, seed: int) -> torch.Tensor:
    """``(states, 1, K)`` float32 logits, each state with one class masked by −1e9 and one by −inf."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(states, 1, K, generator=g) * 3
    masked = torch.randperm(K, generator=g)[:2]
    logits[..., masked[0]] = -1e9
    logits[..., masked[1]] = -INF
    return logits


def test_a_masked_class_is_an_empty_interval_that_no_uniform_selects():
    """The law as the sampler's arithmetic gives it: the running sum in float64 gains exactly 0 at a masked class
    (so its interval C_{k−1} < w ≤ C_k is empty), and the uniforms at both ends of [0, 1) (0 and the largest float64
    below 1), where a sum that ends below 1 used to hand its last grid points to a masked class, select valid ones."""
    logits = random_masked_states(4096, 8, seed=0)
    probs = torch.softmax(logits, -1)
    assert (probs[..., :].eq(0).sum(-1) == 2).all()                        # both masks are probability 0 exactly
    c = probs.double().cumsum(-1)
    zero = probs == 0
    assert torch.equal(c[..., 1:][zero[..., 1:]], c[..., :-1][zero[..., 1:]])   # C_k == C_{k−1} at every mask
    ends = torch.tensor([0.0, 2.0 ** -53, 0.5, 1 - 2.0 ** -24, 1 - 2.0 ** -53], dtype=torch.float64)
    u = ends.view(-1, 1, 1).expand(-1, 4096, 1)
    drawn = CATEGORICAL.from_uniform(u, probs)                             # (5, 4096, 1)
    assert not zero.squeeze(1).gather(-1, drawn.squeeze(-1).t()).any()


def test_masked_classes_are_never_drawn_in_ten_million_draws():
    """4,096 random 8-action states (one class masked by −1e9, one by −inf), 2,560 draws each through the public
    sampler (one-hot samples): no masked class in 1.05e7 draws (the old float32 sampler drew it in 29% of such
    states), and OneHotCategorical(probs=...) with exact zeros, through expect, never scores one either."""
    logits = random_masked_states(4096, 8, seed=1)
    probs = torch.softmax(logits, -1)
    g = torch.Generator().manual_seed(2)
    hits = 0
    for _ in range(10):
        h = CATEGORICAL.sample(probs, (256,), g)                          # (256, 4096, 1, 8)
        hits += int((h * (probs == 0)).sum())
        assert torch.equal(h.sum(-1), torch.ones_like(h.sum(-1)))
    assert hits == 0
    p = torch.tensor([[0.5, 0.0, 0.25, 0.25, 0.0]]).expand(1000, 1, 5).contiguous()
    seen = []
    f = lambda h: (seen.append(h.detach()), (h * torch.arange(5.0)).sum((-2, -1)))[1]  # noqa: E731
    sg.expect(f, torch.distributions.OneHotCategorical(probs=p), "reinforce", samples=50,
              generator=torch.Generator().manual_seed(3))
    assert seen[0][..., [1, 4]].sum() == 0 and seen[0].sum() == 50 * 1000


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_at_vocabulary_size_the_draw_follows_the_softmax(dtype):
    """K = 2^18 classes shaped like a language model's next token: a head of 1,024 likely classes and a long tail whose
    probabilities (~1e-9 each, 2.6e-4 in all) lie below float32's resolution near 1. 2 rows, 2^21 draws each: the
    counts of 256 groups of classes of equal expected mass against the softmax of the logits (in float64), by a χ²
    test at p > 1e-4 per row, and the tail's count against its mass. The former float32 running sum and 2⁻²⁴ grid
    of uniforms never drew the tail (0 draws where ~550 are due)."""
    K, head, rows, draws, groups = 2 ** 18, 1024, 2, 2 ** 21, 256
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(rows, 1, K, generator=g)
    logits[..., head:] -= 13.0
    logits = logits.to(dtype)
    probs = torch.softmax(logits.float(), -1)                            # what expect samples from, for any dtype
    exact = torch.softmax(logits.double(), -1).squeeze(1)                # (rows, K)
    u = CATEGORICAL.uniform_for((draws, rows, 1), probs, g)
    index = CATEGORICAL.from_uniform(u, probs).squeeze(-1)              # (draws, rows)
    cdf = exact.cumsum(-1)
    group_of = (cdf * groups).floor().clamp_max(groups - 1).long()       # groups of about equal mass
    for r in range(rows):
        counts = torch.zeros(groups, dtype=torch.float64).index_add_(0, group_of[r, index[:, r]],
                                                                     torch.ones(draws, dtype=torch.float64))
        expected = torch.zeros(groups, dtype=torch.float64).index_add_(0, group_of[r], exact[r]) * draws
        used = expected > 0                                              # (a likely class may span several)
        assert expected[used].min() > 5
        stat = ((counts[used] - expected[used]).square() / expected[used]).sum().item()
        assert chi2.sf(stat, int(used.sum()) - 1) > 1e-4, (r, stat)
        tail = exact[r, head:].sum().item() * draws                      # the long tail keeps its mass
        got = (index[:, r] >= head).sum().item()
        assert tail > 100 and abs(got - tail) < 5 * math.sqrt(tail), (got, tail)


def test_minus_inf_logits_mask_categorical_classes_and_other_values_are_errors():
    """−inf: probability 0 exactly and zero gradient, for every categorical estimator; +inf, NaN and a unit whose
    classes are all −inf raise before anything runs; the lowest float32 is finite whatever the tensor's shape
    (the check no longer sums in float32); Bernoulli logits keep refusing −inf."""
    w = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    f = lambda h: (h * w).sum((-2, -1)).square()  # noqa: E731
    base = torch.tensor([[[0.3, -INF, 1.2, -0.5], [-INF, 0.1, -0.2, 0.4]]], dtype=torch.float64)
    for name, info in sg.estimators().items():
        if "categorical" not in info.distributions:
            continue
        a = base.clone().requires_grad_(True)
        est = sg.get_estimator(name)
        value = est(f, a, max(2, est.min_samples), torch.Generator().manual_seed(0), "categorical")
        value.sum().backward()
        assert torch.isfinite(value).all() and torch.isfinite(a.grad).all(), name
        assert a.grad[0, 0, 1] == 0 and a.grad[0, 1, 0] == 0, name
    for bad, what in [(INF, "+inf"), (float("nan"), "NaN")]:
        a = base.clone()
        a[0, 0, 2] = bad
        with pytest.raises(ValueError, match="masked class"):
            sg.expect(f, a, "reinforce", distribution="categorical")
    a = base.clone()
    a[0, 1] = -INF
    with pytest.raises(ValueError, match="all −inf"):
        sg.expect(f, a, "reinforce", distribution="categorical")
    lowest = torch.finfo(torch.float32).min
    for shape in [(1, 4), (64, 4), (4096, 16)]:
        a = torch.full(shape, lowest)
        sg.expect(lambda b: b.sum(-1), a, "reinforce")
        sg.expect(lambda h: h.sum((-2, -1)), a.unsqueeze(-1).expand(*shape, 2).contiguous(), "reinforce",
                  distribution="categorical")
    with pytest.raises(ValueError, match="must be finite"):
        sg.expect(lambda b: b.sum(-1), torch.tensor([[0.0, -INF]]), "reinforce")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("distribution", ["bernoulli", "categorical"])
def test_low_precision_logits_draw_from_their_own_law_not_a_rounded_one(dtype, distribution):
    """Probabilities taken in bfloat16 are rounded to 8 bits: for the logit 0.85, σ from 0.7006 to 0.6992; for the
    logits [0.852, 0.479, −0.393], softmax's class 0 from 0.5059 to 0.5073 even after renormalising: biases of 7 and 6
    standard errors in 2^22 draws. Through ``sg.expect`` low-precision logits are sampled from their own law
    (computed in float32, one copy), within 4 standard errors of the float64 truth."""
    draws = 2 ** 22
    if distribution == "categorical":
        row = torch.tensor([0.8515625, 0.478515625, -0.392578125]).to(dtype)
        logits = row.expand(draws, 1, 3)
        truth = torch.softmax(row.double(), -1)[0].item()
        rounded = torch.softmax(row, -1).double()
        rounded = (rounded / rounded.sum())[0].item()
        pick = lambda h: h[..., 0].sum(-1).float()   # noqa: E731
    else:
        logits = torch.tensor([0.85]).to(dtype).expand(draws, 1)
        truth = torch.sigmoid(logits[0].double()).item()
        rounded = torch.sigmoid(logits[0]).double().item()
        pick = lambda h: h.sum(-1).float()   # noqa: E731
    seen = []
    sg.expect(lambda h: (seen.append(pick(h)), pick(h))[1], logits, "reinforce",
              generator=torch.Generator().manual_seed(9), distribution=distribution)
    freq, se = seen[0].double().mean().item(), math.sqrt(truth * (1 - truth) / draws)
    if dtype == torch.bfloat16:
        assert abs(rounded - truth) > 5 * se          # the rounded law is measurably another law
    assert abs(freq - truth) < 4 * se, (freq, truth, rounded)


def test_float32_bernoulli_units_resolve_probabilities_down_to_its_uniform_grid():
    """The documented limit of float32 Bernoulli sampling (``stochgrad.sampling.bernoulli``): ``u`` lies on a grid of
    2⁻²⁴, so a unit with σ(a) below 2⁻²⁴ fires on exactly one grid point, u = 0: with probability 2⁻²⁴, not σ(a)
    (σ(−30) = 9·10⁻¹⁴). float64 logits draw float64 noise, whose grid of 2⁻⁵³ resolves σ(−30)."""
    from stochgrad.sampling import bernoulli_from_uniform, uniform
    p32 = torch.sigmoid(torch.tensor([-30.0]))
    grid = torch.tensor([0.0, 2.0 ** -24, 2.0 ** -23])
    assert bernoulli_from_uniform(grid, p32).tolist() == [1.0, 0.0, 0.0]      # P(h = 1) = 2⁻²⁴ ≫ 9e-14
    assert uniform((4,), p32).dtype == torch.float32
    p64 = torch.sigmoid(torch.tensor([-30.0], dtype=torch.float64))
    assert uniform((4,), p64).dtype == torch.float64
    steps = torch.tensor([0.0, 2.0 ** -53, 4e-14, 9.4e-14], dtype=torch.float64)
    assert bernoulli_from_uniform(steps, p64).tolist() == [1.0, 1.0, 1.0, 0.0]  # ≈ 8.5e13 grid points below σ(−30)
