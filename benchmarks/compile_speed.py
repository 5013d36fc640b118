"""torch.compile (inductor) against eager: step time of a small StochasticBinary model and of ``sg.expect``.

Cases (noise from the global RNG, the usual way to train; with a ``torch.Generator`` every draw is a graph
break, reported by ``--explain`` as well):

- ``model``: ``Linear(784, 200) → StochasticBinary(straight_through) → Linear(200, 200) →
  StochasticBinary(gumbel_st) → Linear(200, 10)``, batch 64: forward, cross-entropy, backward, SGD step
  (the compiled module; the optimiser step is eager in both).
- ``expect/<estimator>``: ``sg.expect(f, a, est).sum()`` and its backward for ``straight_through``,
  ``reinforce_ma`` and ``disarm``, ``f`` the separable quadratic, logits ``(batch, units)`` (default 64 x 100).

Method as in ``overhead.py``: process CPU time (CUDA: wall time with a synchronisation per block), compiled
and eager in shuffled order within each round, the median [quartiles] of the within-round ratios
compiled/eager (below 1: compiling pays). Compilation itself (the first calls, wall time) is timed apart.
Graph breaks come from ``torch._dynamo.explain``. On a CPU inductor draws its own random numbers in its
generated code; ``--fallback-random`` uses eager's instead (the same numbers as eager).

Run: ``python benchmarks/compile_speed.py [--rounds 7 --reps 50 --backend inductor --json out.json]``.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch
from torch import nn

import stochgrad as sg
from stochgrad.runinfo import environment, set_threads

from timing import cell, clock, ratio, timed_rounds  # the same timing method (benchmarks/ is on sys.path)


def quad(b):
    return (b - 0.45).square().sum(-1)


def model_case(device):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 200), sg.StochasticBinary("straight_through"), nn.Linear(200, 200),
                          sg.StochasticBinary("gumbel_st"), nn.Linear(200, 10)).to(device)
    x, y = torch.rand(64, 784, device=device), torch.randint(0, 10, (64,), device=device)

    def make(compiled: bool, backend: str):
        net = torch.compile(model, backend=backend) if compiled else model
        opt = torch.optim.SGD(model.parameters(), lr=0.01)

        def step():
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        return step, (lambda: nn.functional.cross_entropy(model(x), y))
    return make


def expect_case(name, device, batch, units):
    torch.manual_seed(0)
    a = torch.randn(batch, units, device=device, requires_grad=True)

    def make(compiled: bool, backend: str):
        est = sg.get_estimator(name).to(device)
        fn = lambda logits: sg.expect(quad, logits, est).sum()  # noqa: E731
        run = torch.compile(fn, backend=backend) if compiled else fn

        def step():
            a.grad = None
            run(a).backward()
        return step, (lambda: fn(a))
    return make


def breaks(fn) -> dict:
    """Graphs and graph breaks of ``fn()`` by ``torch._dynamo.explain`` (with the reasons, deduplicated)."""
    torch._dynamo.reset()
    out = torch._dynamo.explain(fn)()
    reasons = sorted({str(getattr(b, "reason", b)).splitlines()[0][:160] for b in out.break_reasons})
    return {"graphs": out.graph_count, "graph_breaks": out.graph_break_count, "reasons": reasons}


def main(rounds: int, reps: int, backend: str, device: str, out: str | None, batch: int = 64, units: int = 100,
         fallback_random: bool = False):
    dev = torch.device(device)
    cuda = dev.type == "cuda"

    now = clock(dev)

    if fallback_random:  # aten's random numbers (eager's) instead of inductor's own generator
        import torch._inductor.config as inductor_config
        inductor_config.fallback_random = True
    cases = {"model (2 StochasticBinary layers, batch 64)": model_case(dev)}
    for name in ("straight_through", "reinforce_ma", "disarm"):
        cases[f"expect/{name} ({batch} x {units})"] = expect_case(name, dev, batch, units)
    results = {}
    print(f"# torch.compile ({backend}{', fallback_random' if fallback_random else ''}) / eager, {dev}, {torch.get_num_threads()} thread(s), {rounds} rounds x "
          f"{reps} steps; median [quartiles] of within-round ratios of {'wall' if cuda else 'process CPU'} time\n")
    print("| case | compiled / eager | eager ms/step | compile s | graphs | graph breaks |")
    print("|---|---|---|---|---|---|")
    for label, make in cases.items():
        torch._dynamo.reset()
        eager, forward = make(False, backend)
        compiled, _ = make(True, backend)
        t = time.perf_counter()
        for _ in range(3):  # compiles (forward and backward) and warms up
            compiled()
        compile_s = time.perf_counter() - t  # wall time: inductor compiles in worker processes too
        explained = breaks(forward)
        torch._dynamo.reset()
        compiled, _ = make(True, backend)
        for _ in range(3):
            compiled()
        for _ in range(3):
            eager()
        fns = {"eager": eager, "compiled": compiled}
        times = timed_rounds(fns, reps, rounds, now, random.Random(0))
        r = ratio(times, "compiled", "eager")
        results[label] = {"ratio": list(r), "eager_s": times["eager"],
                          "compiled_s": times["compiled"], "compile_s": compile_s, **explained}
        print(f"| {label} | {cell(r)} | "
              f"{statistics.median(times['eager']) * 1e3:.2f} | {compile_s:.1f} | {explained['graphs']} | "
              f"{explained['graph_breaks']} |", flush=True)
    for label, r in results.items():
        for reason in r["reasons"]:
            print(f"  break in {label}: {reason}")
    if out:
        with open(out, "w") as fh:
            json.dump({"backend": backend, "fallback_random": fallback_random, "rounds": rounds, "reps": reps, "device": str(dev), "cases": results,
                       "environment": environment()}, fh, indent=1)
    return results


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--backend", default="inductor")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64, help="expect cases: logits (batch, units)")
    p.add_argument("--units", type=int, default=100)
    p.add_argument("--fallback-random", action="store_true",
                   help="torch._inductor.config.fallback_random: eager's random numbers inside compiled code")
    p.add_argument("--json")
    a = p.parse_args()
    set_threads(a.threads)
    main(a.rounds, a.reps, a.backend, a.device, a.json, a.batch, a.units, a.fallback_random)
