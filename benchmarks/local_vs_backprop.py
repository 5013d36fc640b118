"""Where local learning pays: one training step of a deep equal-width stochastic network (default 8 layers of
1024 units, batch 128), broadcast-only local learning (``reinforce_optimal`` layers, ``broadcast(local=True)``)
against the same step with back-propagation (``straight_through`` layers, ``loss.backward()``).

Back-propagation needs an input-gradient matmul at every layer on top of the weight gradients; learning
from the broadcast loss needs only each layer's weight gradient (seed §3.1), so its backward pass costs
about half of back-propagation's and the step about two thirds. Reported, as same-round ratios (process
CPU time, candidates shuffled within each round, median [quartiles] of the rounds' ratios; CUDA: wall time
with a synchronisation), with a control row (backprop against itself), and the memory each step holds
for its backward pass (bytes of the tensors autograd saves; on CUDA also the peak allocated).
Target: local / backprop <= 0.75.

Run: ``python benchmarks/local_vs_backprop.py [--layers 8 --width 1024 --batch 128 --rounds 7 --json out.json]``.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics

import torch
from torch import nn

import stochgrad as sg
from stochgrad.runinfo import environment, set_threads

from overhead import clock, ratio, timed_rounds  # the same timing method (benchmarks/ is on sys.path)


def net(estimator, layers, width, classes, device):
    torch.manual_seed(0)
    mods = []
    for _ in range(layers):
        mods += [nn.Linear(width, width), sg.StochasticBinary(estimator)]
    return nn.Sequential(*mods, nn.Linear(width, classes)).to(device)


def saved_bytes(step) -> int:
    """Bytes of the tensors autograd saves for the backward pass during ``step`` (counted once per storage)."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def main(layers, width, batch, rounds, reps, device, out=None):
    dev = torch.device(device)
    x = torch.rand(batch, width, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    local, backprop = net("reinforce_optimal", layers, width, 10, dev), net("straight_through", layers, width, 10, dev)
    opt_l = torch.optim.SGD(local.parameters(), lr=0.01)
    opt_b = torch.optim.SGD(backprop.parameters(), lr=0.01)

    def step_local():
        opt_l.zero_grad()
        with sg.broadcast(local=True) as graph:
            loss = nn.functional.cross_entropy(local(x), y, reduction="none")
        graph.backward(loss)
        opt_l.step()

    def step_backprop():
        opt_b.zero_grad()
        nn.functional.cross_entropy(backprop(x), y).backward()
        opt_b.step()

    def forward_only():
        with torch.no_grad():
            backprop(x)

    fns = {"local": step_local, "backprop": step_backprop, "backprop (again)": step_backprop, "forward": forward_only}
    cuda = dev.type == "cuda"

    now = clock(dev)

    memory = {}
    for k in ("local", "backprop"):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        memory[k] = {"saved_for_backward_bytes": saved_bytes(fns[k])}
        if cuda:
            memory[k]["cuda_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
    for fn in fns.values():
        fn()
    times = timed_rounds(fns, reps, rounds, now, random.Random(0))
    rows = {"local / backprop": ratio(times, "local", "backprop"),
            "control: backprop / backprop": ratio(times, "backprop (again)", "backprop"),
            "forward only / backprop": ratio(times, "forward", "backprop")}
    print(f"{layers} x {width} units, batch {batch}, {dev}, {torch.get_num_threads()} thread(s), {rounds} rounds x {reps} "
          f"steps; median [quartiles] of within-round ratios of {'wall' if cuda else 'process CPU'} time")
    for k, (m, lo, hi) in rows.items():
        print(f"  {k:30s} {m:.2f} [{lo:.2f}, {hi:.2f}]")
    print(f"  step time (median): local {statistics.median(times['local']) * 1e3:.1f} ms, backprop "
          f"{statistics.median(times['backprop']) * 1e3:.1f} ms (target local/backprop <= 0.75)")
    for k, m in memory.items():
        print(f"  memory held for the backward pass, {k}: " + ", ".join(f"{n} {v / 2 ** 20:.1f} MiB" for n, v in m.items()))
    if out:
        with open(out, "w") as fh:
            json.dump({"layers": layers, "width": width, "batch": batch, "rounds": rounds, "reps": reps,
                       "ratios": rows, "seconds": times, "memory": memory, "environment": environment()}, fh, indent=1)
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json")
    a = p.parse_args()
    set_threads(a.threads)
    main(a.layers, a.width, a.batch, a.rounds, a.reps, a.device, a.json)
