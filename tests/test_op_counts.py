"""Ops per full estimate (forward and backward, views not counted), counted with a TorchDispatchMode on the CPU with
the CPU treated as a device (no host reads: the accelerator's path), against the common hand-written idiom with the
same kind of noise: the idioms of benchmarks/overhead.py (``F.gumbel_softmax(hard=True)`` for categorical gumbel_st,
an autograd.Function in the ReinMax authors' style for reinmax). Counts are deterministic; a count is a proxy for
kernel launches on a GPU. Counted at ``NODE_MIN`` = 2¹⁵ logits, where the replace-gradient and straight-through are
one autograd node each; below that size they are the idiom's own surrogate (two to four small ops more, which cost
less than a Python ``autograd.Function`` call there: ``stochgrad.gradient.NODE_MIN``).

Where stochgrad does what the idiom leaves out, the allowance says so: the guarded moving average's finiteness flag
(the idiom folds a NaN loss into its baseline; ``(m − m) == 0`` is two ops, the guard saves three elsewhere), and the
categorical logits' mask-aware check (``amax`` per unit, so that −inf masks a class while NaN, +inf and all-masked
units are errors: one op more than a plain sum).
"""
import pathlib

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from stochgrad import guard
from stochgrad.gradient import NODE_MIN
from conftest import load_benchmark

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def overhead():
    return load_benchmark("overhead")


class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func.overloadpacket is not torch.ops.aten.detach:
            self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def count(step, a) -> int:
    step(a)   # first use sizes the state
    with Count() as c:
        step(a)
    return len(c.ops)


def gumbel_softmax_idiom(ov):
    return lambda a: ov.f_categorical(F.gumbel_softmax(a, tau=0.5, hard=True)).sum().backward()


class ReinMaxIdiom(torch.autograd.Function):
    """The authors' form (microsoft/ReinMax, reinmax.py): a one-hot sample forward, 2·J(π1)ᵀg − ½·J(π0)ᵀg back."""

    @staticmethod
    def forward(ctx, logits, h):
        p0 = logits.softmax(-1)
        p1 = 0.5 * (h + p0)   # τ = 1
        ctx.save_for_backward(p0, p1)
        return h

    @staticmethod
    def backward(ctx, g):
        p0, p1 = ctx.saved_tensors
        g1, g0 = p1 * g, p0 * g
        return 2 * (g1 - p1 * g1.sum(-1, keepdim=True)) - 0.5 * (g0 - p0 * g0.sum(-1, keepdim=True)), None


def reinmax_idiom(ov, gen):
    def step(a):
        p = torch.softmax(a.detach(), -1)
        ov.f_categorical(ReinMaxIdiom.apply(a, ov._sample(p, gen))).sum().backward()
    return step


def gumbel_rao_idiom(ov, gen, draws=10, tau=0.5):
    """nshepperd/gumbel-rao-pytorch's layout: the conditional Gumbel of every class given the sample, averaged."""
    def step(a):
        a0 = a.detach()
        p = torch.softmax(a0, -1)
        h = ov._sample(p, gen)
        e = -torch.log(torch.rand((draws, *a.shape), generator=gen))                  # Exp(1)
        e_top = (h * e).sum(-1, keepdim=True)
        noise = torch.where(h > 0, -torch.log(e_top) - torch.log(p), -torch.log(e + e_top * p))
        soft = torch.softmax((a + noise) / tau, -1).mean(0)
        ov.f_categorical(h + soft - soft.detach()).sum().backward()
    return step


BERNOULLI = ["straight_through", "reinforce", "reinforce_ma", "reinforce_optimal", "reinforce_loo", "arm", "disarm",
             "gumbel_st"]
CATEGORICAL = ["reinforce_loo", "straight_through", "gumbel_st", "gumbel_rao", "reinmax"]
ALLOW = {("bernoulli", "reinforce_ma"): 1, ("categorical", "gumbel_st"): 1}


@pytest.mark.parametrize("distribution, name", [("bernoulli", n) for n in BERNOULLI]
                         + [("categorical", n) for n in CATEGORICAL])
def test_no_more_ops_than_the_idiom(distribution, name, monkeypatch):
    monkeypatch.setattr(guard, "HOST_READS", frozenset())   # the accelerator's path: no value read on the host
    ov = overhead()
    gen = torch.Generator().manual_seed(0)
    if distribution == "bernoulli":   # NODE_MIN elements (below it the library builds the idiom's surrogate itself)
        a = torch.randn(64, NODE_MIN // 64, requires_grad=True)
        idiom = ov.reference(name, gen)
    else:
        a = torch.randn(64, NODE_MIN // 64 // 8, 8, requires_grad=True)
        idiom = {"gumbel_st": lambda: gumbel_softmax_idiom(ov), "reinmax": lambda: reinmax_idiom(ov, gen),
                 "gumbel_rao": lambda: gumbel_rao_idiom(ov, gen)}.get(name, lambda: ov.reference_categorical(name, gen))()
    ours, theirs = count(ov.ours(name, gen, distribution), a), count(idiom, a)
    assert ours <= theirs + ALLOW.get((distribution, name), 0), (ours, theirs)
