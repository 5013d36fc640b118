"""Categorical units at vocabulary scale: time, peak memory and full-size allocations of one gradient estimate.

Logits ``(rows, K)`` (one categorical unit per row: a position of a language model, ``K`` its vocabulary), the
linear loss ``f(h) = Σ_k w_k h_k`` per row (``w`` fixed), forward and backward of the summed estimate. Methods:

- stochgrad through ``sg.expect(f, a, estimator, distribution="categorical")``, logits viewed as ``(rows, 1, K)``:
  ``straight_through``, ``gumbel_st`` (τ = 0.5), ``reinmax`` (τ = 1), ``gumbel_rao`` (τ = 0.5, 10 draws),
  ``reinforce_loo`` (groups of ``S = 4`` samples of each row, the leave-one-out baseline over the group), and
  ``straight_through`` handed a ``torch.distributions.OneHotCategorical`` (what its construction adds);
- the plain-torch idioms of the same estimators: ``F.gumbel_softmax(hard=True)`` (the yardstick), and by hand
  (``plain_straight_through``, ``plain_reinmax``, ``plain_gumbel_rao``, ``plain_reinforce_loo``),
  sampling with ``torch.multinomial`` as such code does at large ``K``.

Per method and size, eager and ``torch.compile(fullgraph=True, dynamic=False)`` (a method that does not compile
records why): time per estimate (``timing.timed_rounds``: the candidates of one size shuffled within each round,
process CPU time, on CUDA wall time with a synchronisation per block; the median over rounds, and the within-round
ratio to eager ``F.gumbel_softmax``), peak memory above the logits (``allocations.peak_memory``, compiled code
included: on CUDA the allocator's peak, on the CPU the resident set's, with every block of 256 KiB or more mapped
afresh, as glibc does by default from 32 MiB: times include those page faults) and, eager, the full-size
``(rows, K)`` tensors allocated and the peak of the bytes allocated (``allocations.Allocations``, a dispatch mode;
in-place results not counted). A method is skipped at a size where its peak memory, extrapolated from the sizes
before, would pass ``--memory-budget``.

    python benchmarks/large_k.py --json out.json                          # 64 x 1,024 ... 256 x 262,144 on the CPU
    python benchmarks/large_k.py --sizes 64x1024,64x16384 --no-compile    # a quick look
    python benchmarks/large_k.py --device cuda --json out.json            # the same on a GPU

A full run compiles one graph per method and size (77): on the 2-core VM about 10 s each; eager only
(``--no-compile``) or fewer sizes for a short check.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import stochgrad as sg
from stochgrad.runinfo import environment, set_threads

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # timing.py and allocations.py beside this file
from allocations import count, map_large_blocks, peak_memory  # noqa: E402
from timing import clock, timed_rounds  # noqa: E402

SIZES = [(64, 1024), (64, 4096), (64, 16384), (64, 65536), (256, 65536), (64, 262144), (256, 262144)]
TAU, REINMAX_TAU, DRAWS, GROUP = 0.5, 1.0, 10, 4   # the library's defaults; S = 4 samples per group
YARDSTICK = "F.gumbel_softmax"


def loss_weights(K: int, like: torch.Tensor) -> torch.Tensor:
    """The linear loss's ``w``, ``(K,)``: fixed, distinct per class."""
    return torch.linspace(-1, 1, K, dtype=like.dtype, device=like.device)


def one_hot(index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(rows, 1)`` indices to one-hot rows in the shape and dtype of ``like``: zeros, 1 written in place."""
    return torch.zeros_like(like).scatter_(-1, index, 1.0)


# ---- stochgrad ----------------------------------------------------------------------------------------------------
def library(name: str, w: torch.Tensor, torch_distribution: bool = False, index: bool = False, **options):
    """``a -> loss``: the summed estimate of ``E[w·h]`` through ``sg.expect`` (``reinforce_loo``: ``GROUP`` samples);
    ``index``: ``f`` reads the class indices, ``w[z]``, as RL code does (``distribution="categorical_index"``)."""
    est = sg.get_estimator(name, **options)
    samples = GROUP if est.min_samples > 1 else 1
    if index:
        return lambda a: sg.expect(lambda z: w[z].sum(-1), a.unsqueeze(-2), est, samples,
                                   distribution="categorical_index").sum()

    def f(h):                                    # one-hot (*lead, rows, 1, K) -> (*lead, rows)
        return (h * w).sum((-2, -1))

    if torch_distribution:
        return lambda a: sg.expect(f, torch.distributions.OneHotCategorical(logits=a.unsqueeze(-2)), est,
                                   samples).sum()
    return lambda a: sg.expect(f, a.unsqueeze(-2), est, samples, distribution="categorical").sum()


# ---- plain torch: the idioms of the same estimators ---------------------------------------------------------------
def gumbel_softmax(a, w, tau=TAU):
    """The yardstick: ``F.gumbel_softmax(a, τ, hard=True)``, straight-through Gumbel as torch ships it."""
    return (F.gumbel_softmax(a, tau=tau, hard=True) * w).sum()


def plain_straight_through(a, w, index=None):
    """One-hot sample forward, ``softmax(a)`` backward: ``hard + p − p.detach()``; ``index`` ``(rows, 1)``: a given
    sample (else ``torch.multinomial``)."""
    p = torch.softmax(a, -1)
    if index is None:
        index = torch.multinomial(p.detach(), 1)
    return ((one_hot(index, p) + p - p.detach()) * w).sum()


class _ReinMax(torch.autograd.Function):
    """ReinMax (Liu et al. 2023, Algorithm 2) as its authors ship it, a function with its own backward: the hard
    sample forward, ``(2·J(π1) − ½·J(π0))ᵀ g`` backward, ``J(p)ᵀ g = p ⊙ g − p (p·g)``, ``π0 = softmax(a)``,
    ``π1 = (h + softmax(a/τ))/2``."""

    @staticmethod
    def forward(ctx, a, tau, index):
        p0 = torch.softmax(a, -1)
        if index is None:
            index = torch.multinomial(p0, 1)
        hard = one_hot(index, p0)
        ctx.save_for_backward(a, p0, hard)
        ctx.tau = tau
        return hard

    @staticmethod
    def backward(ctx, g):
        a, p0, hard = ctx.saved_tensors
        p1 = 0.5 * (torch.softmax(a / ctx.tau, -1) + hard)
        g1 = 2 * g * p1
        g1 = g1 - p1 * g1.sum(-1, keepdim=True)
        g0 = -0.5 * g * p0
        g0 = g0 - p0 * g0.sum(-1, keepdim=True)
        return g1 + g0, None, None


def plain_reinmax(a, w, tau=REINMAX_TAU, index=None):
    """ReinMax by hand (``_ReinMax``)."""
    return (_ReinMax.apply(a, tau, index) * w).sum()


def plain_gumbel_rao(a, w, tau=TAU, draws=DRAWS, index=None, exponentials=None):
    """Gumbel-Rao (Paulus, Maddison & Krause 2021, Alg. 2) by hand: the hard sample forward, backward the mean over
    ``draws`` of ``softmax((a + G)/τ)`` with ``G`` drawn given the sample and held fixed. With ``E ~ Exp(1)`` per
    class and ``log Z = logsumexp(a)``, the perturbed logits given class ``b`` are ``log Z − log E_b`` at ``b`` and
    ``−log(E_j e^{−a_j} + E_b/Z)`` elsewhere (in logs: ``−logaddexp(log E_j − a_j, log E_b − log Z)``).
    ``index`` ``(rows, 1)``, ``exponentials`` ``(draws, rows, K)``: given noise (else drawn)."""
    with torch.no_grad():
        p = torch.softmax(a, -1)
        if index is None:
            index = torch.multinomial(p, 1)
        E = torch.empty((draws, *a.shape), dtype=a.dtype, device=a.device).exponential_() \
            if exponentials is None else exponentials
        log_e = E.log()
        log_top = log_e.gather(-1, index.expand(draws, *index.shape))          # (draws, rows, 1)
        log_z = torch.logsumexp(a, -1, keepdim=True)
        z = torch.logaddexp(log_e - a, log_top - log_z).neg_()
        z.scatter_(-1, index.expand(draws, *index.shape), log_z - log_top)
        noise = z.sub_(a)                                                      # G = z̃ − a, held fixed
    soft = torch.softmax((a + noise) / tau, -1).mean(0)
    return ((one_hot(index, soft) + soft - soft.detach()) * w).sum()


def plain_reinforce_loo(a, w, samples=GROUP, index=None):
    """Group leave-one-out REINFORCE as RL code writes it: ``S`` index samples per row, the loss of each
    (``w[index]``), the baseline the mean of the other ``S − 1``, the score through ``log_softmax(a)`` gathered at the
    samples. The value is the mean loss; the gradient ``mean_s (L_s − c_s) ∇ log p(index_s)``. ``index``
    ``(rows, S)``: given samples."""
    log_p = torch.log_softmax(a, -1)
    if index is None:
        index = torch.multinomial(log_p.detach().exp(), samples, replacement=True)
    L = w[index]                                                               # (rows, S)
    c = (L.sum(-1, keepdim=True) - L) / (samples - 1)
    score = ((L - c) * log_p.gather(-1, index)).mean(-1)
    return (L.mean(-1) + score - score.detach()).sum()


def methods(w: torch.Tensor) -> dict:
    """``{name: a -> loss}``: every method the benchmark measures, for the loss weights ``w``."""
    return {
        YARDSTICK: lambda a: gumbel_softmax(a, w),
        "straight_through": library("straight_through", w),
        "plain straight_through": lambda a: plain_straight_through(a, w),
        "straight_through (OneHotCategorical)": library("straight_through", w, torch_distribution=True),
        "gumbel_st": library("gumbel_st", w, temperature=TAU),
        "reinmax": library("reinmax", w, temperature=REINMAX_TAU),
        "plain reinmax": lambda a: plain_reinmax(a, w),
        "gumbel_rao": library("gumbel_rao", w, temperature=TAU, draws=DRAWS),
        "plain gumbel_rao": lambda a: plain_gumbel_rao(a, w),
        "reinforce_loo": library("reinforce_loo", w),
        "reinforce_loo (index samples)": library("reinforce_loo", w, index=True),
        "plain reinforce_loo": lambda a: plain_reinforce_loo(a, w),
    }


def full_size_tensors(fn, a) -> tuple[int, int, list[str]]:
    """``(count, tensor peak bytes, ops)`` of one eager estimate ``fn(a).backward()`` (``allocations.Allocations``)."""
    def step():
        a.grad = None
        fn(a).backward()
    seen = count(step, a.numel())
    return len(seen.full), seen.peak_bytes, [op.replace("aten.", "") for op, _, _ in seen.full]


# ---- the benchmark ------------------------------------------------------------------------------------------------
def first_line(err: BaseException) -> str:
    """The error's type and first line, and torch.compile's explanation line where it gives one."""
    text = [line.strip() for line in str(err).strip().splitlines()]
    why = next((line for line in text if line.startswith("Explanation:")), "")
    return f"{type(err).__name__}: {text[0][:200] if text else ''}" + (f" ({why[:300]})" if why else "")


def run(sizes, device: torch.device, dtype: torch.dtype, rounds: int, compile_: bool, budget: float,
        only: list[str] | None = None, block_seconds: float = 0.2) -> dict:
    """Measures every method (or those in ``only``, with the yardstick) at every ``(rows, K)`` of ``sizes``, prints a
    table and returns the figures (the JSON of ``--json``). ``budget``: bytes of peak memory a method may take (its
    peak per logit at the sizes before, extrapolated); ``block_seconds``: the length of a timed block of calls."""
    now = clock(device)
    rng = random.Random(0)
    validate = __debug__   # torch.distributions' default argument validation, restored after each compile
    per_element: dict[str, float] = {}          # bytes per logit of each method's peak so far (the extrapolation)
    cells = {}
    if compile_:
        torch._dynamo.config.recompile_limit = 64   # one graph per method and size (dynamic=False)
    print(f"# large K: {device}, {dtype}, {torch.get_num_threads()} thread(s), {rounds} rounds; ms per estimate "
          f"(forward + backward), peak MiB, full-size tensors (eager)\n")
    print("| rows x K | method | eager ms | compiled ms | eager / gumbel_softmax | peak MiB eager | peak MiB compiled | "
          "allocated MiB eager | full-size tensors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rows, K in sizes:
        torch.manual_seed(0)
        a = torch.randn(rows, K, device=device, dtype=dtype, requires_grad=True)
        w = loss_weights(K, a)
        cands = {k: v for k, v in methods(w).items() if only is None or k in only or k == YARDSTICK}
        fulls = rows * K
        cell: dict[str, dict] = {}
        steps = {}
        torch._dynamo.reset()
        for name in cands:
            cell[name] = {"eager": {}, "compiled": {}}
            predicted = per_element.get(name, 0.0) * fulls
            if predicted > budget:
                cell[name]["skipped"] = f"predicted peak {predicted / 2 ** 30:.1f} GiB > budget {budget / 2 ** 30:.1f} GiB"
        # eager first, every method: torch.compile switches torch.distributions' argument validation off for the
        # whole process (restored below), and the OneHotCategorical method's eager counts include that validation
        for mode in ("eager", "compiled") if compile_ else ("eager",):
            for name, fn in cands.items():
                entry = cell[name]
                if "skipped" in entry:
                    continue
                target = torch.compile(fn, fullgraph=True, dynamic=False) if mode == "compiled" else fn

                def step(target=target, a=a):
                    a.grad = None
                    target(a).backward()
                try:
                    t = time.perf_counter()
                    step()
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    first = time.perf_counter() - t
                    step()
                except Exception as err:  # noqa: BLE001 — recorded: a method that does not run at this size
                    entry[mode]["error"] = first_line(err)
                    continue
                finally:
                    torch.distributions.Distribution.set_default_validate_args(validate)
                if mode == "compiled":
                    entry[mode]["compile_s"] = first
                entry[mode]["peak_bytes"] = peak_memory(step, device)
                steps[(name, mode)] = step
                if mode == "eager":
                    n, tensor_peak, ops = full_size_tensors(fn, a)
                    entry["eager"].update(full_size=n, tensor_peak_bytes=tensor_peak, full_size_ops=ops)
                    peak = max(entry["eager"]["peak_bytes"] or 0, tensor_peak)
                    per_element[name] = max(per_element.get(name, 0.0), peak / fulls)
        # timing: every candidate of this size, shuffled within each round
        if steps:
            t = {}
            for key, step in steps.items():
                t0 = now()
                step()
                t[key] = max(now() - t0, 1e-6)
            reps = {key: max(1, min(200, int(block_seconds / t[key]))) for key in steps}
            fns = {key: (lambda s=step, r=reps[key]: [s() for _ in range(r)]) for key, step in steps.items()}
            times = timed_rounds(fns, 1, rounds, now, rng)
            for key, ts in times.items():
                per_call = [x / reps[key] for x in ts]
                cell[key[0]][key[1]].update(seconds=per_call, median_s=statistics.median(per_call), reps=reps[key])
            base = times.get((YARDSTICK, "eager"))
            if base:
                for (name, mode), ts in times.items():
                    if mode == "eager":
                        r = sorted((x / reps[(name, mode)]) / (y / reps[(YARDSTICK, "eager")]) for x, y in zip(ts, base))
                        cell[name]["eager"]["ratio_to_gumbel_softmax"] = statistics.median(r)
        for name, entry in cell.items():
            print(row(f"{rows} x {K:,}", name, entry), flush=True)
        cells[f"{rows}x{K}"] = cell
        del a
    return {"device": str(device), "dtype": str(dtype).replace("torch.", ""), "rounds": rounds,
            "compiled": compile_, "memory_budget_bytes": budget, "sizes": [list(s) for s in sizes],
            "settings": {"gumbel tau": TAU, "reinmax tau": REINMAX_TAU, "gumbel_rao draws": DRAWS,
                         "reinforce_loo samples": GROUP},
            "cells": cells}


def _ms(entry: dict) -> str:
    if "error" in entry:
        return "fails"
    return "–" if "median_s" not in entry else f"{entry['median_s'] * 1e3:.2f}"


def _mib(entry: dict) -> str:
    b = entry.get("peak_bytes")
    return "–" if b is None else f"{b / 2 ** 20:.0f}"


def row(size: str, name: str, entry: dict) -> str:
    """One line of the printed table."""
    if "skipped" in entry:
        return f"| {size} | {name} | skipped: {entry['skipped']} | | | | | | |"
    e, c = entry["eager"], entry["compiled"]
    ratio = e.get("ratio_to_gumbel_softmax")
    allocated = e.get("tensor_peak_bytes")
    return (f"| {size} | {name} | {_ms(e)} | {_ms(c) if c else '–'} | {'–' if ratio is None else f'{ratio:.2f}'} | "
            f"{_mib(e)} | {_mib(c) if c else '–'} | {'–' if allocated is None else f'{allocated / 2 ** 20:.0f}'} | "
            f"{e.get('full_size', '–')} |")


def _sizes(text: str) -> list[tuple[int, int]]:
    try:
        cells = [tuple(int(v) for v in c.lower().split("x")) for c in text.split(",")]
    except ValueError:
        cells = []
    if not cells or any(len(c) != 2 or min(c) < 2 for c in cells):
        raise argparse.ArgumentTypeError(f"sizes must look like 64x1024,256x65536 (rows x K), got {text!r}")
    return cells


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=_sizes, default=SIZES,
                   help="rows x K cells (default 64x1024,64x4096,64x16384,64x65536,256x65536,64x262144,256x262144)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "float64"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-compile", action="store_true", help="eager only")
    p.add_argument("--memory-budget", type=float, default=None,
                   help="GiB: a method is skipped where its extrapolated peak would pass this (default: 6 on the CPU, "
                        "80%% of the free memory of a GPU)")
    p.add_argument("--only", nargs="+", help="these methods only (and the yardstick), by name")
    p.add_argument("--json", help="write the figures to this file")
    a = p.parse_args(argv)
    set_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cpu":
        map_large_blocks()   # before any large tensor: the resident set then follows the live buffers
    budget = a.memory_budget * 2 ** 30 if a.memory_budget else \
        0.8 * torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 6 * 2 ** 30
    results = run(a.sizes, device, getattr(torch, a.dtype), a.rounds, not a.no_compile, budget, a.only)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({**results, "environment": environment()}, fh, indent=1)
    return results


if __name__ == "__main__":
    main()
