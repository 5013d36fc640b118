"""Categorical units at vocabulary scale are bound by memory traffic: the full-size ``(rows, K)`` tensors one gradient
estimate allocates, forward and backward, counted by ``benchmarks/allocations.py`` (a dispatch mode; in-place results
and views not counted), against ``F.gumbel_softmax(hard=True)`` on the same linear loss (``benchmarks/large_k.py``).

Targets: no estimator allocates more full-size tensors than ``F.gumbel_softmax(hard=True)``; ``straight_through`` and
``reinforce_loo`` at most half as many: all met.
The counts do not depend on the size (the benchmark counts the same from 64 × 1,024 to 256 × 65,536), so they are
taken at 16 × 4,096 here. Also: the counter itself, and the benchmark's plain-torch references against the library."""
import math
from pathlib import Path

import pytest
import torch
from conftest import load_benchmark

import stochgrad as sg

ROOT = Path(__file__).resolve().parents[1]
ROWS, K = 16, 4096


load = load_benchmark


allocations, large_k = load("allocations"), load("large_k")


# ---- the counter ------------------------------------------------------------------------------------------------
def test_the_counter_counts_fresh_full_size_tensors_forward_and_backward_and_their_peak():
    """Out-of-place results of the full size count, in the backward pass too; in-place results, views and smaller
    tensors do not; the peak is the most bytes held at once."""
    a = torch.randn(8, 64, requires_grad=True)
    full = a.numel() * a.element_size()

    def step():
        x = a * 2                      # 1
        x.add_(1)                      # in place: not counted
        z = torch.exp(x.view(64, 8))   # a view (not counted), then exp: 2, kept for its backward
        small = z.sum(-1)              # (64,): smaller, not counted
        del x, z                       # held now: z, saved for exp's backward
        small.sum().backward()         # exp's backward (grad · z): 3, the product's (·2, a.grad): 4

    seen = allocations.count(step, a.numel())
    assert [op for op, _, _ in seen.full] == ["aten.mul.Tensor", "aten.exp.default", "aten.mul.Tensor",
                                             "aten.mul.Tensor"], seen.table()
    assert 2 * full <= seen.peak_bytes <= 2 * full + 1024    # x and z, z and its gradient, that and a.grad


def test_the_counter_sees_a_buffer_freed_before_the_next_is_made():
    def step():
        for _ in range(3):
            torch.ones(8, 64)
    seen = allocations.count(step, 512)
    assert len(seen.full) == 3 and seen.peak_bytes == 8 * 64 * 4


# ---- the targets ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def counts():
    torch.manual_seed(0)
    a = torch.randn(ROWS, K, requires_grad=True)
    fns = large_k.methods(large_k.loss_weights(K, a))
    return {name: large_k.full_size_tensors(fns[name], a)[0]
            for name in (large_k.YARDSTICK, "straight_through", "gumbel_st", "reinmax", "gumbel_rao", "reinforce_loo",
                         "reinforce_loo (index samples)", "plain reinforce_loo")}


@pytest.mark.parametrize("name, share", [
    ("straight_through", 1.0),
    ("straight_through", 0.5),
    ("gumbel_st", 1.0),
    ("reinmax", 1.0),
    ("gumbel_rao", 1.0),
    ("reinforce_loo", 1.0),
    ("reinforce_loo", 0.5),
    ("reinforce_loo (index samples)", 0.5),
])
def test_full_size_tensors_per_estimate_against_gumbel_softmax(counts, name, share):
    """Forward + backward of the summed estimate of a linear loss, logits ``(16, 4096)`` as 16 units: at most
    ``share`` × the full-size tensors of ``F.gumbel_softmax(hard=True)`` on the same loss."""
    limit = math.floor(share * counts[large_k.YARDSTICK])
    assert counts[name] <= limit, f"{name}: {counts[name]} full-size tensors, target <= {limit}"


def test_index_samples_allocate_no_more_than_the_rl_idiom(counts):
    """``f`` on class indices (``w[z]``): group leave-one-out REINFORCE makes no one-hot and no score, fewer full-size
    tensors than on one-hot samples and no more than the RL idiom (``log_softmax`` gathered at the samples)."""
    index = counts["reinforce_loo (index samples)"]
    assert index < counts["reinforce_loo"] and index <= counts["plain reinforce_loo"], counts


def test_the_yardstick_counts_what_torch_does():
    """``F.gumbel_softmax(hard=True)`` on the linear loss: noise (empty, log, neg), the perturbed logits (add, div),
    the softmax, the one-hot (zeros), the straight-through sum (sub, add), the loss's product; backward the loss's
    product, the softmax's backward, the division's: 13."""
    a = torch.randn(ROWS, K, requires_grad=True)
    n, _, ops = large_k.full_size_tensors(large_k.methods(large_k.loss_weights(K, a))[large_k.YARDSTICK], a)
    assert n == 13, ops


# ---- the benchmark's references compute the library's gradients -----------------------------------------------
def captured(name, a, w, samples=1, generator=None, **options):
    """The library's gradient on ``a`` ``(rows, K)`` and the one-hot samples its ``f`` saw."""
    seen = []

    def f(h):
        seen.append(h.detach())
        return (h * w).sum((-2, -1))

    a = a.detach().clone().requires_grad_(True)
    sg.expect(f, a.unsqueeze(-2), sg.get_estimator(name, **options), samples, generator,
              distribution="categorical").sum().backward()
    return a.grad, seen[0]


def reference_grad(fn, a):
    a = a.detach().clone().requires_grad_(True)
    fn(a).backward()
    return a.grad


@pytest.fixture
def problem():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(6, 9, generator=g, dtype=torch.float64)
    return a, large_k.loss_weights(9, a)


def test_plain_straight_through_and_reinmax_give_the_librarys_gradient_on_its_sample(problem):
    a, w = problem
    for seed in range(3):
        grad, h = captured("straight_through", a, w, generator=torch.Generator().manual_seed(seed))
        index = h.argmax(-1).reshape(-1, 1)
        torch.testing.assert_close(reference_grad(lambda x: large_k.plain_straight_through(x, w, index), a), grad,
                                   rtol=1e-12, atol=1e-12)
        grad, h = captured("reinmax", a, w, generator=torch.Generator().manual_seed(seed), temperature=0.7)
        index = h.argmax(-1).reshape(-1, 1)
        torch.testing.assert_close(reference_grad(lambda x: large_k.plain_reinmax(x, w, 0.7, index), a), grad,
                                   rtol=1e-12, atol=1e-12)


def test_plain_reinforce_loo_gives_the_librarys_gradient_on_its_samples(problem):
    a, w = problem
    grad, h = captured("reinforce_loo", a, w, samples=4, generator=torch.Generator().manual_seed(2))
    index = h.argmax(-1).squeeze(-1).T                                   # (S, rows, 1, K) -> (rows, S)
    assert grad.abs().sum() > 0
    torch.testing.assert_close(reference_grad(lambda x: large_k.plain_reinforce_loo(x, w, 4, index), a), grad,
                               rtol=1e-12, atol=1e-12)


def test_plain_gumbel_rao_has_the_librarys_mean_given_the_sample(problem):
    """Given the library's sample, both average ``softmax((a + G)/τ)``'s Jacobian over noise drawn given the sample:
    the library's 4000-draw gradient against the reference's, taken as 20 batches of 200 draws, within five standard
    errors of their difference (the spread measured from the reference's batches)."""
    a, w = problem
    draws, batches = 4000, 20
    grad, h = captured("gumbel_rao", a, w, generator=torch.Generator().manual_seed(3), temperature=0.5, draws=draws)
    index = h.argmax(-1).reshape(-1, 1)
    E = torch.empty((draws, *a.shape), dtype=a.dtype).exponential_(generator=torch.Generator().manual_seed(4))
    means = torch.stack([reference_grad(lambda x: large_k.plain_gumbel_rao(x, w, 0.5, draws // batches, index, e), a)
                         for e in E.chunk(batches)])
    mean, se = means.mean(0), means.std(0) / math.sqrt(batches)
    assert (se > 0).all()
    z = (grad - mean) / (math.sqrt(2) * se)
    assert z.abs().max() < 5, z


def test_the_benchmark_runs_at_a_tiny_size(capsys):
    """``benchmarks/large_k.py``'s measurement, eager, one round at 4 × 256: every method runs, is timed and counted,
    and the counts are those asserted above."""
    out = large_k.run([(4, 256)], torch.device("cpu"), torch.float32, rounds=1, compile_=False, budget=2 ** 30,
                      block_seconds=0.001)
    cell = out["cells"]["4x256"]
    assert set(cell) == set(large_k.methods(torch.zeros(1)))
    for name, entry in cell.items():
        assert entry["eager"]["median_s"] > 0 and entry["eager"]["full_size"] >= 1, name
    assert cell[large_k.YARDSTICK]["eager"]["full_size"] == 13
    assert "| 4 x 256 | reinmax |" in capsys.readouterr().out
