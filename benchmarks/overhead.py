"""Cost of a gradient estimate through stochgrad, as same-round ratios (a shared machine: never absolute claims).

Method (robust on a loaded machine): every candidate of one size is timed in *rounds*; within a round the
candidates run in a freshly shuffled order, each for a block of calls, timed in **process CPU time**
(``time.process_time``; on CUDA, wall time with a synchronisation at the end of each block). A ratio is
taken *within* each round (the neighbours shared the machine's state) and the table reports the median
of the rounds' ratios with its spread (the interquartile range). The control row times the hand-written
reinforce against itself (two candidates, same function): it must read 1.00 ± noise, and its spread is
the resolution of the whole table.

1. Core estimators against a hand-written plain-torch version of the same formula, in the common idioms
   (target <= 1.1).
1b. The same runs, against the same formulas hand-written with the dispatch savings stochgrad uses itself (the
   threshold written in place, the replace-gradient as one autograd node, ...): what the library's own checks and
   layers cost per call, with nothing gained back from doing fewer torch operations than the common idioms.
2. REBAR and RELAX, default settings (tuning every ``tune_every`` calls), against plain reinforce
   (target <= 5); each block a whole number of tuning cycles (8 calls), so that it holds the defaults' mix of tuning
   and plain calls (blocks of 3 calls at the largest size held a tuning call in 3 of 4 blocks: the median
   overweighted it).
3. (``--all``) every estimator against stochgrad's reinforce.

f is the separable quadratic ``Σ (b − 0.45)²`` so that the estimator's own work dominates.
Rounds: 25 at the large cells, 75 at the cheap one-example ones, where jitter is a larger part of a call
(:func:`rounds_for`; ``--rounds``, ``--small-rounds``). A full run takes ~9 min on the 2-core VM.
Run: ``python benchmarks/overhead.py [--quick] [--device cuda] [--sizes 10x1,1000x1] [--json out.json]``.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import random
import statistics
import time

import torch

import stochgrad as sg
from stochgrad.runinfo import environment, set_threads

SIZES = [(10, 1), (10, 1024), (1000, 1), (1000, 1024)]
TUNE_CYCLE = 8  # calls in which REBAR (tune_every=8) and RELAX (tune_every=4, its temperature every 2nd step) each
# complete whole tuning cycles
CORE = ["straight_through", "straight_through_sigmoid", "reinforce", "reinforce_ma", "reinforce_optimal",
        "reinforce_loo", "arm", "disarm", "gumbel_st"]


def f(b):
    return (b - 0.45).square().sum(-1)


# ---- hand-written references: what a careful user writes without the library, one formula each ----------
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
    """Eq. 7's per-unit baseline from moving numerator and denominator."""

    def __init__(self):
        self.num = self.den = None

    def __call__(self, score, L):
        w = score.square()
        if self.num is None:
            self.num = torch.zeros(score.shape[-1], dtype=score.dtype, device=score.device)
            self.den = torch.zeros_like(self.num)
        c = torch.where(self.den > 0, self.num / self.den.clamp_min(1e-30), 0.0)
        self.num.mul_(0.9).add_(0.1 * (w * L.unsqueeze(-1)).reshape(-1, w.shape[-1]).mean(0))
        self.den.mul_(0.9).add_(0.1 * w.reshape(-1, w.shape[-1]).mean(0))
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


def ours(name, gen):
    est = sg.get_estimator(name).to(gen.device)
    samples = max(1, est.min_samples)
    return lambda a: sg.expect(f, a, est, samples, gen).sum().backward()


# ---- the method ------------------------------------------------------------------------------------------
def keep_heap() -> bool:
    """glibc only: fixed thresholds (mmap above 32 MiB, trim above 1 GiB) instead of the dynamic ones, so that freed
    large temporaries stay in the heap rather than go back to the system and fault back in at the next call (each
    fresh 8 MiB buffer costs ~5 ms of page faults on the 2-core VM). Returns whether it was set."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 * 2 ** 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2 ** 30))
    except OSError:
        return False


def clock(device):
    if device.type == "cuda":
        def now():
            torch.cuda.synchronize()
            return time.perf_counter()
        return now
    return time.process_time


def rounds(candidates: dict, a, reps: int, n_rounds: int, now, rng: random.Random) -> dict[str, list[float]]:
    """Seconds per call of every candidate ``fn(a)`` (``a.grad`` cleared before each call), one entry per round;
    shuffled order within each round (:func:`timed_rounds`, after a warm-up that lets stateful estimators settle)."""
    def step(fn):
        def call():
            a.grad = None
            fn(a)
        return call

    steps = {k: step(fn) for k, fn in candidates.items()}
    for call in steps.values():
        for _ in range(3):
            call()
    return timed_rounds(steps, reps, n_rounds, now, rng)


def timed_rounds(fns: dict, reps: int, n_rounds: int, now, rng: random.Random) -> dict[str, list[float]]:
    """Seconds per call of every zero-argument function in ``fns``, one entry per round; shuffled order within
    each round. The one timing loop of the benchmarks: :func:`rounds`, ``compile_speed.py``, ``local_vs_backprop.py``."""
    out = {k: [] for k in fns}
    for _ in range(n_rounds):
        order = list(fns)
        rng.shuffle(order)
        for k in order:
            fn = fns[k]
            t = now()
            for _ in range(reps):
                fn()
            out[k].append((now() - t) / reps)
    return out


def ratio(times: dict, num: str, den: str) -> tuple[float, float, float]:
    """Median, first and third quartile of the within-round ratios ``num / den``."""
    r = sorted(x / y for x, y in zip(times[num], times[den]))
    if len(r) < 4:
        return statistics.median(r), r[0], r[-1]
    q = statistics.quantiles(r, n=4)
    return statistics.median(r), q[0], q[2]


def cell(r) -> str:
    return f"{r[0]:.2f} [{r[1]:.2f}, {r[2]:.2f}]"


def cheap(D, B) -> bool:
    """A cell whose call is cheap on the CPU (``D·B < 100000``: the one-example cells): more calls per block
    (:func:`reps_for`) and more rounds (:func:`rounds_for`)."""
    return D * B < 100000


def reps_for(D, B, quick, device):
    if device.type == "cuda":
        return 20 if quick else 100
    return (30 if cheap(D, B) else 3) if quick else (150 if cheap(D, B) else 10)


def rounds_for(D, B, n_rounds: int, small_rounds: int) -> int:
    """Rounds at one cell: ``small_rounds`` where a call is cheap (:func:`cheap`: the one-example cells), else
    ``n_rounds``. A call there takes ~100–300 µs on the 2-core VM, so the machine's jitter is a larger part of each
    round's ratio: at 25 rounds each median moves by ~±0.05 from run to run and the largest of the nine core
    medians reads 1.07–1.17 where the estimators' own cost is ~3–8% (results/s7). The rounds are cheap there: a
    full run with 75 of them and 25 at the large cells took ~9 minutes (results/s8)."""
    return small_rounds if cheap(D, B) else n_rounds


def run(quick: bool, device: torch.device, n_rounds: int, everything: bool, sizes=SIZES,
        small_rounds: int | None = None) -> dict:
    """Prints and returns the tables. ``n_rounds`` rounds at the large cells, ``small_rounds`` (default: the same)
    at the one-example ones (:func:`rounds_for`)."""
    small_rounds = small_rounds or n_rounds
    torch.manual_seed(0)
    rng = random.Random(0)
    now = clock(device)
    gen = torch.Generator(device=device).manual_seed(0)
    results: dict = {"method": "median of within-round ratios [quartiles], process CPU time (CUDA: wall time "
                               "with a synchronisation per block), candidates shuffled within each round",
                     "device": str(device), "rounds": n_rounds, "small_rounds": small_rounds, "core": {},
                     "core_tuned": {}, "rebar_relax": {}, "all": {}}
    header = "| " + " | ".join(f"D={D}, b={B}" for D, B in sizes) + " |"
    print(f"# stochgrad overhead ({device}, {torch.get_num_threads()} thread(s), {n_rounds} rounds; "
          f"{small_rounds} at D·b < 100000)\n")
    print("## 1. stochgrad / hand-written plain torch (median [quartiles] of within-round ratios; target <= 1.1)\n")
    print("| estimator " + header)
    print("|---|" + "---|" * len(sizes))
    table: dict[str, list] = {name: [] for name in ["control: plain reinforce / itself", *CORE]}
    table_tuned: dict[str, list] = {name: [] for name in CORE}
    table_rr: dict[str, list] = {"rebar": [], "relax": []}
    for D, B in sizes:
        a = torch.randn(B, D, device=device, requires_grad=True)
        cands = {"plain reinforce": reference("reinforce", gen), "plain reinforce (again)": reference("reinforce", gen)}
        for name in CORE:
            cands[name] = ours(name, gen)
            cands["plain " + name] = reference(name, gen)
            cands["tuned " + name] = reference(name, gen, tuned=True)
        n = rounds_for(D, B, n_rounds, small_rounds)
        times = rounds(cands, a, reps_for(D, B, quick, device), n, now, rng)
        table["control: plain reinforce / itself"].append(ratio(times, "plain reinforce (again)", "plain reinforce"))
        for name in CORE:
            table[name].append(ratio(times, name, "plain " + name))
            table_tuned[name].append(ratio(times, name, "tuned " + name))
        rr = {"plain reinforce": reference("reinforce", gen), "rebar": ours("rebar", gen), "relax": ours("relax", gen)}
        # blocks of whole tuning cycles (REBAR tunes every 8th call, RELAX every 4th): each block's calls hold the
        # defaults' mix of tuning and plain calls, whatever the phase of the estimators' call counters
        times = rounds(rr, a, max(TUNE_CYCLE, reps_for(D, B, quick, device) // 3 // TUNE_CYCLE * TUNE_CYCLE), n,
                       now, rng)
        for name in table_rr:
            table_rr[name].append(ratio(times, name, "plain reinforce"))
    for name, cells in table.items():
        print(f"| {name} | " + " | ".join(cell(c) for c in cells) + " |")
        results["core"][name] = {f"D={D},b={B}": c for (D, B), c in zip(sizes, cells)}
    worst = max(c[0] for name in CORE for c in table[name])
    print(f"\nworst median ratio of a core estimator: {worst:.2f}\n")
    print("## 1b. the same runs, against references written with stochgrad's dispatch savings (in-place threshold, "
          "one-node replace-gradient, sign-clamp threshold): the library's own per-call tax\n")
    print("| estimator " + header)
    print("|---|" + "---|" * len(sizes))
    for name, cells in table_tuned.items():
        print(f"| {name} | " + " | ".join(cell(c) for c in cells) + " |")
        results["core_tuned"][name] = {f"D={D},b={B}": c for (D, B), c in zip(sizes, cells)}
    results["worst_core_tuned"] = max(c[0] for name in CORE for c in table_tuned[name])
    print(f"\nworst median ratio against the tuned references: {results['worst_core_tuned']:.2f}\n")
    print("## 2. REBAR and RELAX (default settings) / hand-written plain reinforce (target <= 5)\n")
    print("| estimator " + header)
    print("|---|" + "---|" * len(sizes))
    for name, cells in table_rr.items():
        print(f"| {name} | " + " | ".join(cell(c) for c in cells) + " |")
        results["rebar_relax"][name] = {f"D={D},b={B}": c for (D, B), c in zip(sizes, cells)}
    results["worst_core"] = worst
    if everything:
        print("\n## 3. every estimator / stochgrad reinforce (samples = 1; loo 2)\n")
        print("| estimator | f evals " + header)
        print("|---|---|" + "---|" * len(sizes))
        for name, info in sg.estimators().items():
            cells = []
            for D, B in sizes:
                if name == "exact" and D > 10 or name == "finite_difference" and D * D * B > 2e6:
                    cells.append("n/a")
                    continue
                a = torch.randn(B, D, device=device, requires_grad=True)
                times = rounds({"reinforce": ours("reinforce", gen), name: ours(name, gen)}, a,
                               max(2, reps_for(D, B, quick, device) // 3), max(3, n_rounds // 2), now, rng)
                cells.append(f"{ratio(times, name, 'reinforce')[0]:.2f}")
            results["all"][name] = cells
            print(f"| {name} | {info.cost} | " + " | ".join(cells) + " |")
    return results


def _sizes(text: str) -> list[tuple[int, int]]:
    """``"10x1,1000x1"`` as ``[(10, 1), (1000, 1)]``: units ``D`` by examples ``b``."""
    try:
        cells = [tuple(int(v) for v in cell.lower().split("x")) for cell in text.split(",")]
    except ValueError:
        cells = []
    if not cells or any(len(c) != 2 or min(c) < 1 for c in cells):
        raise argparse.ArgumentTypeError(f"sizes must look like 10x1,1000x1024 (units x examples), got {text!r}")
    return cells


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calls per block (a smoke test)")
    parser.add_argument("--rounds", type=int, default=0, help="rounds at the large cells (default 25; quick 5)")
    parser.add_argument("--small-rounds", type=int, default=0,
                        help="rounds at the cheap one-example cells, D·b < 100000 "
                             "(default 3 × --rounds; quick: --rounds)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--all", action="store_true", help="also every estimator against stochgrad's reinforce")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--keep-heap", action="store_true",
                        help="glibc: fixed malloc thresholds for the whole process (see keep_heap); default: dynamic")
    parser.add_argument("--sizes", type=_sizes, default=SIZES,
                        help="the (units x examples) cells, e.g. 10x1,1000x1 (default: 10x1,10x1024,1000x1,1000x1024)")
    parser.add_argument("--categorical", action="store_true",
                        help="also categorical units (n, K) against hand-written torch (overhead_categorical.py)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    kept = keep_heap() if args.keep_heap else False
    print(f"glibc heap thresholds: {'fixed (--keep-heap)' if kept else 'dynamic (default)'}")
    n_rounds = args.rounds or (5 if args.quick else 25)
    results = run(args.quick, torch.device(args.device), n_rounds, args.all, args.sizes,
                  args.small_rounds or (n_rounds if args.quick else 3 * n_rounds))
    if args.categorical:  # issue 10: the same method, on one-hot categorical units
        from overhead_categorical import run as run_categorical
        print()
        results["categorical"] = run_categorical(args.quick, torch.device(args.device),
                                                 n_rounds)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({**results, "keep_heap": kept, "environment": environment()}, fh, indent=1)
    return results


if __name__ == "__main__":
    main()
