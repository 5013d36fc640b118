"""Cost of a gradient estimate through stochgrad, as same-round ratios (a shared machine: never absolute claims).

Method (``timing.py``): every candidate of one size is timed in *rounds*; within a round the candidates run in a
freshly shuffled order, each for a block of calls, timed in **process CPU time** (on CUDA, wall time with a
synchronisation at the end of each block). A ratio is taken *within* each round (the neighbours shared the machine's
state) and the table reports the median of the rounds' ratios with its spread (the interquartile range). The control
row times the hand-written reinforce against itself (two candidates, same function): it must read 1.00 ± noise, and
its spread is the resolution of the whole table.

The distribution is a parameter (``--distribution``):

- ``bernoulli`` (default): logits ``(b, D)``, ``f(b) = Σ (b − 0.45)²``.

  1. Core estimators against a hand-written plain-torch version of the same formula, in the common idioms
     (target <= 1.1).
  1b. The same runs, against the same formulas hand-written with the dispatch savings stochgrad uses itself (the
     threshold written in place, the replace-gradient as one autograd node, ...): what the library's own checks and
     layers cost per call, with nothing gained back from doing fewer torch operations than the common idioms.
  2. REBAR and RELAX, default settings (tuning every ``tune_every`` calls), against plain reinforce (target <= 5);
     each block a whole number of tuning cycles (8 calls), so that it holds the defaults' mix of tuning and plain
     calls (blocks of 3 calls at the largest size held a tuning call in 3 of 4 blocks: the median overweighted it).
  3. (``--all``) every estimator against stochgrad's reinforce.

- ``categorical``: logits ``(b, n, K)``, ``f(h) = Σ_i (w·h_i − 0.45)²`` with ``w = linspace(0, 1, K)``; section 1
  for the estimators that support one-hot categorical units.

f is cheap so that the estimator's own work dominates. Rounds (Bernoulli): 25 at the large cells, 75 at the cheap
one-example ones, where jitter is a larger part of a call (:func:`rounds_for`; ``--rounds``, ``--small-rounds``);
categorical: ``--rounds`` at every cell. A full Bernoulli run takes ~9 min on a 2-core VM.
Run: ``python benchmarks/overhead.py [--distribution categorical] [--quick] [--device cuda] [--sizes 10x1,1000x1]
[--json out.json]``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys

import torch
import torch.nn.functional as F

import stochgrad as sg
from stochgrad.runinfo import environment, set_threads

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # timing.py beside this file, also when loaded by path
from timing import cell, clock, keep_heap, ratio, rounds  # noqa: E402

SIZES = [(10, 1), (10, 1024), (1000, 1), (1000, 1024)]                  # Bernoulli: (D units, b examples)
CATEGORICAL_SIZES = [(10, 10, 1), (20, 10, 100), (30, 10, 1024), (100, 64, 64)]   # (n units, K classes, b examples)
TUNE_CYCLE = 8  # calls in which REBAR (tune_every=8) and RELAX (tune_every=4, its temperature every 2nd step) each
# complete whole tuning cycles
CORE = ["straight_through", "straight_through_sigmoid", "reinforce", "reinforce_ma", "reinforce_optimal",
        "reinforce_loo", "arm", "disarm", "gumbel_st"]
CATEGORICAL_CORE = ["reinforce", "reinforce_optimal", "reinforce_loo", "straight_through", "gumbel_st", "reinmax"]


def f(b):
    return (b - 0.45).square().sum(-1)


def f_categorical(h):
    w = torch.linspace(0, 1, h.shape[-1], dtype=h.dtype, device=h.device)
    return ((h * w).sum(-1) - 0.45).square().sum(-1)


# ---- hand-written Bernoulli references: what a careful user writes without the library, one formula each ---
# ``tuned=False`` (section 1, the yardstick): the common idioms, ``(u < p).to(dtype)`` for the threshold and
# ``value + s − s.detach()`` with ``s = Σ g·a`` to attach a gradient. ``tuned=True`` (section 1b): the same formulas
# with the dispatch savings stochgrad itself uses (the threshold written over the fresh noise, ``u.lt_(p)``; a
# one-node autograd.Function to attach the gradient; ``sign(z)`` clamped at 0 for ``1[z > 0]``; one detach shared):
# against these, the ratio is the library's own per-call tax (validation, layers), nothing else.
def _rand(shape, a, gen):
    return torch.rand(shape, generator=gen, dtype=a.dtype, device=a.device)


class _Attach(torch.autograd.Function):
    """``value`` forward, ``∂L/∂value · g`` to ``a`` backward: the replace-gradient idiom as one node."""

    @staticmethod
    def forward(ctx, value, a, g):
        ctx.save_for_backward(g)
        return value.detach()

    @staticmethod
    def backward(ctx, d):
        (g,) = ctx.saved_tensors
        return d, d.unsqueeze(-1) * g, None


def _attach(value, a, g):
    s = (g * a).sum(-1)
    (value + s - s.detach()).sum().backward()


def _attach_tuned(value, a, g):
    _Attach.apply(value, a, g).sum().backward()


def plain_reinforce(a, gen, baseline=None, tuned=False):
    p = torch.sigmoid(a.detach())
    h = _rand(p.shape, a, gen).lt_(p) if tuned else (_rand(p.shape, a, gen) < p).to(a.dtype)
    L = f(h)
    score = h - p
    centred = L.unsqueeze(-1) if baseline is None else L.unsqueeze(-1) - baseline(score, L)
    (_attach_tuned if tuned else _attach)(L, a, score * centred)


class PlainMA:
    """A bias-corrected moving average of the loss, as a tensor (Corollary 1)."""

    def __init__(self):
        self.mean, self.steps = None, 0

    def __call__(self, score, L):
        if self.mean is None:
            self.mean = torch.zeros((), dtype=L.dtype, device=L.device)
        c = self.mean / (1 - 0.9 ** self.steps) if self.steps else 0.0
        self.mean.mul_(0.9).add_(0.1 * L.mean())
        self.steps += 1
        return c


class PlainOptimal:
    """Eq. 7's baseline per unit (and class, with ``event=2`` for categorical units) from moving numerator and
    denominator."""

    def __init__(self, event=1):
        self.event, self.num, self.den = event, None, None

    def __call__(self, score, L):
        w = score.square()
        shape = w.shape[-self.event:]
        if self.num is None:
            self.num = torch.zeros(shape, dtype=score.dtype, device=score.device)
            self.den = torch.zeros_like(self.num)
        c = torch.where(self.den > 0, self.num / self.den.clamp_min(1e-30), 0.0)
        self.num.mul_(0.9).add_(0.1 * (w * L.reshape(*L.shape, *[1] * self.event)).reshape(-1, *shape).mean(0))
        self.den.mul_(0.9).add_(0.1 * w.reshape(-1, *shape).mean(0))
        return c


def plain_loo(a, gen, S=2, tuned=False):
    p = torch.sigmoid(a.detach())
    h = _rand((S, *p.shape), a, gen).lt_(p) if tuned else (_rand((S, *p.shape), a, gen) < p).to(a.dtype)
    L = f(h)
    c = (L.sum(0, keepdim=True) - L) / (S - 1)
    (_attach_tuned if tuned else _attach)(L.mean(0), a, ((h - p) * (L - c).unsqueeze(-1)).mean(0))


def plain_straight_through(a, gen, sigmoid=False, tuned=False):
    if not tuned:
        p = torch.sigmoid(a.detach())
        h = (_rand(p.shape, a, gen) < p).to(a.dtype)
        r = torch.sigmoid(a) if sigmoid else a
        f(h + r - r.detach()).sum().backward()
        return
    r = torch.sigmoid(a) if sigmoid else a
    r0 = r.detach()                                  # one detach: the probabilities, or the logits'
    p = r0 if sigmoid else torch.sigmoid(r0)
    f(_rand(p.shape, a, gen).lt_(p) + (r - r0)).sum().backward()


def plain_arm(a, gen, tuned=False):
    p = torch.sigmoid(a.detach())
    u = _rand(p.shape, a, gen)
    if tuned:
        L = f(torch.stack([1 - u, u]).lt_(p))
    else:
        L = f(torch.stack([(1 - u < p).to(a.dtype), (u < p).to(a.dtype)]))
    (_attach_tuned if tuned else _attach)(L.mean(0), a, (L[0] - L[1]).unsqueeze(-1) * (u - 0.5))


def plain_disarm(a, gen, tuned=False):
    p = torch.sigmoid(a.detach())
    u = _rand(p.shape, a, gen)
    if tuned:
        pair = torch.stack([u, 1 - u]).lt_(p)
        b, bt = pair
        L = f(pair)
    else:
        b, bt = (u < p).to(a.dtype), (1 - u < p).to(a.dtype)
        L = f(torch.stack([b, bt]))
    w = (1 - 2 * bt) * (b != bt).to(a.dtype) * torch.sigmoid(a.detach().abs())
    (_attach_tuned if tuned else _attach)(L.mean(0), a, 0.5 * (L[0] - L[1]).unsqueeze(-1) * w)


def plain_gumbel_st(a, gen, tau=0.5, tuned=False):
    u = _rand(a.shape, a, gen)
    z = (a + torch.logit(u, eps=torch.finfo(a.dtype).eps)) / tau
    soft = torch.sigmoid(z)
    hard = z.detach().sign().clamp_min_(0) if tuned else (z > 0).to(a.dtype)
    f(hard + soft - soft.detach()).sum().backward()


def reference(name, gen, tuned=False):
    """The hand-written step for a core estimator: a callable ``a -> None`` (stateful ones get their state);
    ``tuned``: written with stochgrad's dispatch savings (section 1b)."""
    if name == "reinforce_ma":
        state = PlainMA()
        return lambda a: plain_reinforce(a, gen, state, tuned)
    if name == "reinforce_optimal":
        state = PlainOptimal()
        return lambda a: plain_reinforce(a, gen, state, tuned)
    if name == "straight_through":
        return lambda a: plain_straight_through(a, gen, False, tuned)
    if name == "straight_through_sigmoid":
        return lambda a: plain_straight_through(a, gen, True, tuned)
    if name == "reinforce":
        return lambda a: plain_reinforce(a, gen, None, tuned)
    if name == "reinforce_loo":
        return lambda a: plain_loo(a, gen, 2, tuned)
    if name == "gumbel_st":
        return lambda a: plain_gumbel_st(a, gen, 0.5, tuned)
    plain = {"arm": plain_arm, "disarm": plain_disarm}[name]
    return lambda a: plain(a, gen, tuned)


# ---- hand-written categorical references (the common idioms) ----------------------------------------------------
def _sample(p, gen, lead=()):
    """One uniform per unit through the inverse CDF, as a careful user writes it."""
    u = torch.rand((*lead, *p.shape[:-1]), generator=gen, dtype=p.dtype, device=p.device)
    idx = (p.cumsum(-1)[..., :-1] < (1 - u).unsqueeze(-1)).sum(-1)
    return F.one_hot(idx, p.shape[-1]).to(p.dtype)


def _attach_categorical(value, a, g):
    s = (g * a).sum((-2, -1))
    (value + s - s.detach()).sum().backward()


def plain_categorical_reinforce(a, gen, baseline=None):
    p = torch.softmax(a.detach(), -1)
    h = _sample(p, gen)
    L = f_categorical(h)
    score = h - p
    c = 0.0 if baseline is None else baseline(score, L)
    _attach_categorical(L, a, score * (L[..., None, None] - c))


def plain_categorical_loo(a, gen, S=2):
    p = torch.softmax(a.detach(), -1)
    h = _sample(p, gen, (S,))
    L = f_categorical(h)
    c = (L.sum(0, keepdim=True) - L) / (S - 1)
    _attach_categorical(L.mean(0), a, ((h - p) * (L - c)[..., None, None]).mean(0))


def plain_categorical_straight_through(a, gen):
    p = torch.softmax(a, -1)
    h = _sample(p.detach(), gen)
    f_categorical(h + p - p.detach()).sum().backward()


def plain_categorical_gumbel_st(a, gen, tau=0.5):
    u = torch.rand(a.shape, generator=gen, dtype=a.dtype, device=a.device).clamp_min(torch.finfo(a.dtype).tiny)
    z = a - torch.log(-torch.log(u))
    soft = torch.softmax(z / tau, -1)
    hard = F.one_hot(z.argmax(-1), a.shape[-1]).to(a.dtype)
    f_categorical(hard + soft - soft.detach()).sum().backward()


def plain_categorical_reinmax(a, gen, tau=1.0):
    p0 = torch.softmax(a.detach(), -1)
    h = _sample(p0, gen)
    p1 = 0.5 * (h + torch.softmax(a.detach() / tau, -1))
    p1 = torch.softmax(a + (p1.log() - a).detach(), -1)        # Liu et al. 2023, Alg. 2
    p2 = 2 * p1 - 0.5 * torch.softmax(a, -1)
    f_categorical(h + p2 - p2.detach()).sum().backward()


def reference_categorical(name, gen):
    """The hand-written categorical step for ``name`` (the common idioms; no tuned variants)."""
    if name == "reinforce_optimal":
        state = PlainOptimal(event=2)
        return lambda a: plain_categorical_reinforce(a, gen, state)
    plain = {"reinforce": plain_categorical_reinforce, "reinforce_loo": plain_categorical_loo,
             "straight_through": plain_categorical_straight_through, "gumbel_st": plain_categorical_gumbel_st,
             "reinmax": plain_categorical_reinmax}[name]
    return lambda a: plain(a, gen)


def ours(name, gen, distribution="bernoulli"):
    est = sg.get_estimator(name).to(gen.device)
    samples = max(1, est.min_samples)
    if distribution == "categorical":
        return lambda a: sg.expect(f_categorical, a, est, samples, gen, distribution="categorical").sum().backward()
    return lambda a: sg.expect(f, a, est, samples, gen).sum().backward()


# ---- the method ------------------------------------------------------------------------------------------
class Axis:
    """What the benchmark needs to know of one distribution: its cells, estimators, references and block sizes."""

    def __init__(self, name, sizes, core, reference, shape, label, reps, tuned):
        self.name, self.sizes, self.core, self.reference, self.tuned = name, sizes, core, reference, tuned
        self.shape, self.label, self.reps = shape, label, reps    # reps: (cheap, large, quick cheap, quick large)

    def key(self, size) -> str:
        return self.label(size).replace(" ", "")


DISTRIBUTIONS = {
    "bernoulli": Axis("bernoulli", SIZES, CORE, reference, shape=lambda s: (s[1], s[0]),
                      label=lambda s: f"D={s[0]}, b={s[1]}", reps=(150, 10, 30, 3), tuned=True),
    "categorical": Axis("categorical", CATEGORICAL_SIZES, CATEGORICAL_CORE, lambda name, gen, tuned=False:
                        reference_categorical(name, gen), shape=lambda s: (s[2], s[0], s[1]),
                        label=lambda s: f"n={s[0]}, K={s[1]}, b={s[2]}", reps=(100, 10, 20, 3), tuned=False),
}


def cheap(size) -> bool:
    """A cell whose call is cheap on the CPU (fewer than 100000 logits: the one-example cells): more calls per block
    (:func:`reps_for`) and, for Bernoulli units, more rounds (:func:`rounds_for`)."""
    return math.prod(size) < 100000


def reps_for(axis: Axis, size, quick, device):
    if device.type == "cuda":
        return 20 if quick else 100
    return axis.reps[(2 if quick else 0) + (0 if cheap(size) else 1)]


def rounds_for(size, n_rounds: int, small_rounds: int) -> int:
    """Rounds at one cell: ``small_rounds`` where a call is cheap (:func:`cheap`: the one-example cells), else
    ``n_rounds``. A call there takes ~100–300 µs on a 2-core VM, so the machine's jitter is a larger part of each
    round's ratio: at 25 rounds each median moves by ~±0.05 from run to run and the largest of the nine core
    medians reads 1.07–1.17 where the estimators' own cost is ~3–8%. The rounds are cheap there: a full run with 75
    of them and 25 at the large cells took ~9 minutes."""
    return small_rounds if cheap(size) else n_rounds


def _table(title, axis, sizes, rows: dict, out: dict):
    print(title + "\n")
    print("| estimator | " + " | ".join(axis.label(s) for s in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cell(c) for c in cells) + " |")
        out[name] = {axis.key(s): c for s, c in zip(sizes, cells)}


def run(quick: bool, device: torch.device, n_rounds: int, everything: bool = False, sizes=None,
        small_rounds: int | None = None, distribution: str = "bernoulli") -> dict:
    """Prints and returns the tables. ``n_rounds`` rounds at the large cells, ``small_rounds`` (default: the same)
    at the one-example ones (:func:`rounds_for`)."""
    axis = DISTRIBUTIONS[distribution]
    sizes = sizes or axis.sizes
    small_rounds = small_rounds or n_rounds
    torch.manual_seed(0)
    rng = random.Random(0)
    now = clock(device)
    gen = torch.Generator(device=device).manual_seed(0)
    results: dict = {"method": "median of within-round ratios [quartiles], process CPU time (CUDA: wall time "
                               "with a synchronisation per block), candidates shuffled within each round",
                     "distribution": distribution, "device": str(device), "rounds": n_rounds,
                     "small_rounds": small_rounds, "core": {}, "core_tuned": {}, "rebar_relax": {}, "all": {}}
    print(f"# stochgrad overhead, {distribution} units ({device}, {torch.get_num_threads()} thread(s), {n_rounds} "
          f"rounds; {small_rounds} at fewer than 100000 logits)\n")
    table: dict[str, list] = {name: [] for name in ["control: plain reinforce / itself", *axis.core]}
    table_tuned: dict[str, list] = {name: [] for name in axis.core}
    table_rr: dict[str, list] = {"rebar": [], "relax": []}
    for size in sizes:
        a = torch.randn(axis.shape(size), device=device, requires_grad=True)
        cands = {"plain reinforce": axis.reference("reinforce", gen),
                 "plain reinforce (again)": axis.reference("reinforce", gen)}
        for name in axis.core:
            cands[name] = ours(name, gen, distribution)
            cands["plain " + name] = axis.reference(name, gen)
            if axis.tuned:
                cands["tuned " + name] = axis.reference(name, gen, tuned=True)
        n = rounds_for(size, n_rounds, small_rounds)
        times = rounds(cands, a, reps_for(axis, size, quick, device), n, now, rng)
        table["control: plain reinforce / itself"].append(ratio(times, "plain reinforce (again)", "plain reinforce"))
        for name in axis.core:
            table[name].append(ratio(times, name, "plain " + name))
            if axis.tuned:
                table_tuned[name].append(ratio(times, name, "tuned " + name))
        if distribution != "bernoulli":
            continue
        rr = {"plain reinforce": reference("reinforce", gen), "rebar": ours("rebar", gen), "relax": ours("relax", gen)}
        # blocks of whole tuning cycles (REBAR tunes every 8th call, RELAX every 4th): each block's calls hold the
        # defaults' mix of tuning and plain calls, whatever the phase of the estimators' call counters
        times = rounds(rr, a, max(TUNE_CYCLE, reps_for(axis, size, quick, device) // 3 // TUNE_CYCLE * TUNE_CYCLE),
                       n, now, rng)
        for name in table_rr:
            table_rr[name].append(ratio(times, name, "plain reinforce"))
    _table("## 1. stochgrad / hand-written plain torch (median [quartiles] of within-round ratios; target <= 1.1)",
           axis, sizes, table, results["core"])
    results["worst_core"] = max(c[0] for name in axis.core for c in table[name])
    print(f"\nworst median ratio of a core estimator: {results['worst_core']:.2f}\n")
    if axis.tuned:
        _table("## 1b. the same runs, against references written with stochgrad's dispatch savings (in-place "
               "threshold, one-node replace-gradient, sign-clamp threshold): the library's own per-call tax",
               axis, sizes, table_tuned, results["core_tuned"])
        results["worst_core_tuned"] = max(c[0] for name in axis.core for c in table_tuned[name])
        print(f"\nworst median ratio against the tuned references: {results['worst_core_tuned']:.2f}\n")
    if distribution == "bernoulli":
        _table("## 2. REBAR and RELAX (default settings) / hand-written plain reinforce (target <= 5)",
               axis, sizes, table_rr, results["rebar_relax"])
    if everything:
        print("\n## 3. every estimator / stochgrad reinforce (samples = 1; loo 2)\n")
        print("| estimator | f evals | " + " | ".join(axis.label(s) for s in sizes) + " |")
        print("|---|---|" + "---|" * len(sizes))
        for name, info in sg.estimators().items():
            cells = []
            for D, B in sizes:
                if name == "exact" and D > 10 or name == "finite_difference" and D * D * B > 2e6:
                    cells.append("n/a")
                    continue
                a = torch.randn(B, D, device=device, requires_grad=True)
                times = rounds({"reinforce": ours("reinforce", gen), name: ours(name, gen)}, a,
                               max(2, reps_for(axis, (D, B), quick, device) // 3), max(3, n_rounds // 2), now, rng)
                cells.append(f"{ratio(times, name, 'reinforce')[0]:.2f}")
            results["all"][name] = cells
            print(f"| {name} | {info.cost} | " + " | ".join(cells) + " |")
    return results


def _sizes(text: str) -> list[tuple[int, ...]]:
    """``"10x1,1000x1"`` as ``[(10, 1), (1000, 1)]``: units ``D`` by examples ``b`` (categorical: ``n x K x b``)."""
    try:
        cells = [tuple(int(v) for v in cell.lower().split("x")) for cell in text.split(",")]
    except ValueError:
        cells = []
    if not cells or any(len(c) not in (2, 3) or min(c) < 1 for c in cells):
        raise argparse.ArgumentTypeError(f"sizes must look like 10x1,1000x1024 (units x examples) or 10x10x1 "
                                         f"(units x classes x examples), got {text!r}")
    return cells


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distribution", choices=list(DISTRIBUTIONS), default="bernoulli",
                        help="the stochastic units: bernoulli (D units) or one-hot categorical (n units of K classes)")
    parser.add_argument("--quick", action="store_true", help="fewer calls per block (a smoke test)")
    parser.add_argument("--rounds", type=int, default=0, help="rounds at the large cells (default 25; quick 5)")
    parser.add_argument("--small-rounds", type=int, default=0,
                        help="rounds at the cheap one-example cells, fewer than 100000 logits "
                             "(default: Bernoulli 3 × --rounds, quick or categorical --rounds)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--all", action="store_true",
                        help="also every estimator against stochgrad's reinforce (Bernoulli units)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--keep-heap", action="store_true",
                        help="glibc: fixed malloc thresholds for the whole process (see timing.keep_heap); "
                             "default: dynamic")
    parser.add_argument("--sizes", type=_sizes, default=None,
                        help="the cells, e.g. 10x1,1000x1 (Bernoulli, units x examples; default "
                             "10x1,10x1024,1000x1,1000x1024) or 10x10x1 (categorical, units x classes x examples; "
                             "default 10x10x1,20x10x100,30x10x1024,100x64x64)")
    args = parser.parse_args(argv)
    width = 2 if args.distribution == "bernoulli" else 3
    if args.sizes and any(len(s) != width for s in args.sizes):
        parser.error(f"--sizes for {args.distribution} units need {width} numbers per cell")
    if args.all and args.distribution != "bernoulli":
        parser.error("--all times every estimator on Bernoulli units only")
    set_threads(args.threads)
    kept = keep_heap() if args.keep_heap else False
    print(f"glibc heap thresholds: {'fixed (--keep-heap)' if kept else 'dynamic (default)'}")
    n_rounds = args.rounds or (5 if args.quick else 25)
    small = args.small_rounds or (3 * n_rounds if args.distribution == "bernoulli" and not args.quick else n_rounds)
    results = run(args.quick, torch.device(args.device), n_rounds, args.all, args.sizes, small, args.distribution)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({**results, "keep_heap": kept, "environment": environment()}, fh, indent=1)
    return results


if __name__ == "__main__":
    main()
