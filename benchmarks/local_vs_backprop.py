"""Where local learning pays: one training step of a deep equal-width stochastic network (default 8 layers of
1024 units, batch 128), broadcast-only local learning (``reinforce_optimal`` layers, ``broadcast(local=True)``)
against the same step with back-propagation (``straight_through`` layers, ``loss.backward()``).

What is compared, and why it is the fair comparison: the same network, the same forward sampling
(``h = 1[u < σ(a)]``, one uniform per unit), the same loss (cross-entropy of a linear read-out), the same SGD
step, zeroed gradients set to ``None`` (PyTorch's default) on both sides; every candidate writes the threshold
``1[u < σ(a)]`` over its fresh noise, as stochgrad's sampler does (one pass, no boolean buffer).
Back-propagation through binary units needs a pathwise estimator: straight-through is the standard one, and its layer costs two elementwise
passes in the forward pass and none in the backward; the backward pass is PyTorch's own (a weight-gradient and
an input-gradient matmul at every layer). Local learning uses Eq. 7's ``reinforce_optimal`` (the unbiased
broadcast estimator with the lowest variance of the seed's): each layer's weight gradient is one matmul of
``(h − σ(a))·(L − c)/B`` with the layer's input, and no input gradient is ever formed (seed §3.1).
Two references keep both sides honest: ``local, plain torch`` is the same local rule written by hand (no
stochgrad; its forward under ``no_grad``, each weight gradient one ``mm``), and ``backprop, plain torch`` the
straight-through backprop step with a custom autograd function (no extra passes): the ratios to them show what
stochgrad itself costs on each side.

Reported, as same-round ratios (process CPU time, candidates shuffled within each round, median [quartiles]
of the rounds' ratios; CUDA: wall time with a synchronisation), with a control row (backprop against itself):
the ratios, each candidate's median step time, its minor page faults and system time per step (the kernel's
share of the CPU time: with glibc, a step whose freed gradients end at the top of the heap has them returned to
the system at ``zero_grad`` and faulted back in by the next backward pass; ``--keep-heap`` fixes glibc's
thresholds for the whole process so that neither side pays it), and memory: the bytes each step holds from its
forward pass for its backward pass (autograd's saved tensors and the broadcast graph's decisions, parameters not
counted), and each side's process peak (Linux: the high-water mark of the resident set of a fresh
process that builds that side's model alone and runs a few of its steps, and how far it rose above the resident
size before them). Target:
local / backprop <= 0.75.

Run: ``python benchmarks/local_vs_backprop.py [--layers 8 --width 1024 --batch 128 --rounds 7 --keep-heap
--json out.json]``.
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys

import torch
from torch import nn

import stochgrad as sg
from stochgrad.runinfo import environment, set_threads

from timing import clock, keep_heap, ratio, timed_rounds  # the same timing method (benchmarks/ is on sys.path)

DECAY = 0.9  # reinforce_optimal's default


def net(estimator, layers, width, classes, device, generators=None):
    torch.manual_seed(0)
    mods = []
    for i in range(layers):
        mods += [nn.Linear(width, width), sg.StochasticBinary(estimator, generator=generators[i] if generators else None)]
    return nn.Sequential(*mods, nn.Linear(width, classes)).to(device)


class PlainLocal:
    """The local rule written by hand in plain torch: forward under ``no_grad``, then per layer
    ``g = (h − σ(a))·(L − c)/B`` with Eq. 7's per-unit ``c`` (moving numerator and denominator, read before
    they fold this step in), ``W.grad = gᵀ·input``, ``b.grad = Σ g``; the read-out learns by autograd."""

    def __init__(self, model: nn.Sequential, generators=None):
        self.linears = [m for m in model if isinstance(m, nn.Linear)]
        self.generators = generators or [None] * (len(self.linears) - 1)
        self.num = [torch.zeros_like(m.bias) for m in self.linears[:-1]]
        self.den = [torch.zeros_like(m.bias) for m in self.linears[:-1]]

    def loss_and_gradients(self, x, y):
        """Fills ``.grad`` of every parameter (gradient of the mean loss); returns the per-example losses."""
        inputs, hs, ps = [], [], []
        with torch.no_grad():
            h = x
            for lin, gen in zip(self.linears[:-1], self.generators):
                inputs.append(h)
                p = torch.sigmoid(torch.addmm(lin.bias, h, lin.weight.t()))
                u = torch.rand(p.shape, dtype=p.dtype, device=p.device) if gen is None else \
                    torch.rand(p.shape, generator=gen, dtype=p.dtype, device=p.device)
                h = torch.lt(u, p, out=u)   # 1[u < p] over the fresh noise, as stochgrad's sampler writes it
                ps.append(p)
                hs.append(h)
        loss = nn.functional.cross_entropy(self.linears[-1](h), y, reduction="none")
        loss.mean().backward()
        with torch.no_grad():
            L, B = loss.detach(), loss.shape[0]
            w = torch.stack([L, torch.ones_like(L)]) / B      # one pass over each score for both statistics
            for k, lin in enumerate(self.linears[:-1]):
                score = hs[k] - ps[k]
                num, den = self.num[k], self.den[k]
                c = torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), 0.0)
                stats = w @ score.square()
                num.lerp_(stats[0], 1 - DECAY)
                den.lerp_(stats[1], 1 - DECAY)
                g = (L.unsqueeze(-1) / B - c / B).mul_(score)   # 1/B on the vectors: no pass of its own
                lin.weight.grad = g.t().mm(inputs[k])
                lin.bias.grad = g.sum(0)
        return loss


class _StraightThrough(torch.autograd.Function):
    """``h`` forward, the identity backward: straight-through with no extra elementwise pass (``h = 1[u < σ(a)]``
    written over the fresh noise ``u``, as stochgrad's sampler writes it)."""

    @staticmethod
    def forward(ctx, a, u):
        ctx.mark_dirty(u)
        return torch.lt(u, torch.sigmoid(a), out=u)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def plain_backprop_forward(model: nn.Sequential, x):
    h = x
    for m in model:
        if isinstance(m, nn.Linear):
            h = m(h)
        else:
            h = _StraightThrough.apply(h, torch.rand(h.shape, dtype=h.dtype, device=h.device))
    return h


def held_bytes(step, model) -> int:
    """Bytes held from the forward pass for the backward pass during ``step``: the tensors autograd saves and,
    under a broadcast, what its graph keeps of each decision (samples, probabilities); each storage once,
    the model's own parameters left out (a matmul saves its weight for the input gradient: held anyway)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def keep(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    deliver = sg.graph.Graph.backward

    def spy(graph, loss):
        for node in graph.nodes:
            for t in (node.h, node.probs):
                keep(t)
        return deliver(graph, loss)

    sg.graph.Graph.backward = spy
    try:
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            step()
    finally:
        sg.graph.Graph.backward = deliver
    return sum(seen.values())


def steps(layers, width, batch, device, which=None):
    """The candidates' step functions, each with its own model (the same initial weights) and optimiser;
    ``which``: the names to build (default: all)."""
    dev = torch.device(device)
    x = torch.rand(batch, width, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    fns = {}

    def want(*names):
        return which is None or any(n in which for n in names)

    if want("local"):
        local = net("reinforce_optimal", layers, width, 10, dev)
        opt_l = torch.optim.SGD(local.parameters(), lr=0.01)

        def step_local():
            opt_l.zero_grad()
            with sg.broadcast(local=True) as graph:
                loss = nn.functional.cross_entropy(local(x), y, reduction="none")
            graph.backward(loss)
            opt_l.step()
        fns["local"], step_local.model = step_local, local
    if want("backprop", "backprop (again)", "forward only"):
        backprop = net("straight_through", layers, width, 10, dev)
        opt_b = torch.optim.SGD(backprop.parameters(), lr=0.01)

        def step_backprop():
            opt_b.zero_grad()
            nn.functional.cross_entropy(backprop(x), y).backward()
            opt_b.step()

        def forward_only():
            with torch.no_grad():
                backprop(x)
        fns.update({"backprop": step_backprop, "backprop (again)": step_backprop, "forward only": forward_only})
        step_backprop.model = backprop
    if want("local, plain torch"):
        plain_l = net("reinforce_optimal", layers, width, 10, dev)
        plain = PlainLocal(plain_l)
        opt_pl = torch.optim.SGD(plain_l.parameters(), lr=0.01)

        def step_plain_local():
            opt_pl.zero_grad()
            plain.loss_and_gradients(x, y)
            opt_pl.step()
        fns["local, plain torch"], step_plain_local.model = step_plain_local, plain_l
    if want("backprop, plain torch"):
        plain_b = net("straight_through", layers, width, 10, dev)
        opt_pb = torch.optim.SGD(plain_b.parameters(), lr=0.01)

        def step_plain_backprop():
            opt_pb.zero_grad()
            nn.functional.cross_entropy(plain_backprop_forward(plain_b, x), y).backward()
            opt_pb.step()
        fns["backprop, plain torch"], step_plain_backprop.model = step_plain_backprop, plain_b
    return {k: fns[k] for k in CANDIDATES if k in fns}


CANDIDATES = ["local", "backprop", "backprop (again)", "local, plain torch", "backprop, plain torch", "forward only"]


def _status(field: str) -> int:
    """A size from ``/proc/self/status`` (Linux), in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def peak_of(side, layers, width, batch, device, keep, n_steps=5) -> dict:
    """Run in a fresh process: build ``side``'s model alone, take one step, then reset the kernel's high-water
    mark of the resident set (``/proc/self/clear_refs``) and run ``n_steps`` steps: the process peak during the
    steps (``VmHWM``) and how far it rose above the resident size before them."""
    if keep:
        keep_heap()
    fn = steps(layers, width, batch, device, which=[side])[side]
    fn()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    before = _status("VmRSS")
    for _ in range(n_steps):
        fn()
    peak = _status("VmHWM")
    return {"process_peak_bytes": peak, "peak_above_resident_before_bytes": peak - before}


def counted(fn, faults, system):
    def run():
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        fn()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        faults.append(r1.ru_minflt - r0.ru_minflt)
        system.append(r1.ru_stime - r0.ru_stime)
    return run


def main(layers, width, batch, rounds, reps, device, out=None, keep=False):
    kept = keep_heap() if keep else False
    dev = torch.device(device)
    fns = steps(layers, width, batch, device)
    cuda = dev.type == "cuda"
    now = clock(dev)

    memory = {}
    for k in ("local", "backprop"):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        memory[k] = {"held_for_backward_bytes": held_bytes(fns[k], fns[k].model)}
        if cuda:
            memory[k]["cuda_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
    if not cuda:
        for k in ("local", "backprop"):
            cmd = [sys.executable, __file__, "--peak-of", k, "--layers", str(layers), "--width", str(width),
                   "--batch", str(batch), "--threads", str(torch.get_num_threads())] + (["--keep-heap"] if keep else [])
            memory[k].update(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout))
    for fn in fns.values():
        fn()
    faults = {k: [] for k in fns}
    system = {k: [] for k in fns}
    times = timed_rounds({k: counted(fn, faults[k], system[k]) for k, fn in fns.items()}, reps, rounds, now,
                         random.Random(0))
    rows = {"local / backprop": ratio(times, "local", "backprop"),
            "control: backprop / backprop": ratio(times, "backprop (again)", "backprop"),
            "local / backprop, plain torch": ratio(times, "local", "backprop, plain torch"),
            "local, plain torch / backprop": ratio(times, "local, plain torch", "backprop"),
            "local / local, plain torch": ratio(times, "local", "local, plain torch"),
            "backprop / backprop, plain torch": ratio(times, "backprop", "backprop, plain torch"),
            "forward only / backprop": ratio(times, "forward only", "backprop")}
    per_step = {k: {"median_seconds": statistics.median(times[k]),
                    "minor_faults": statistics.median(faults[k]),
                    "system_seconds": statistics.median(system[k])} for k in fns}
    print(f"{layers} x {width} units, batch {batch}, {dev}, {torch.get_num_threads()} thread(s), {rounds} rounds x {reps} "
          f"steps; median [quartiles] of within-round ratios of {'wall' if cuda else 'process CPU'} time; "
          f"glibc heap thresholds {'fixed (--keep-heap)' if kept else 'dynamic (default)'}")
    for k, (m, lo, hi) in rows.items():
        print(f"  {k:34s} {m:.2f} [{lo:.2f}, {hi:.2f}]")
    print("  per step (median):")
    for k, s in per_step.items():
        print(f"    {k:24s} {s['median_seconds'] * 1e3:6.1f} ms, {s['minor_faults']:6.0f} minor page faults, "
              f"system {s['system_seconds'] * 1e3:4.1f} ms")
    print("  target local/backprop <= 0.75")
    for k, m in memory.items():
        print(f"  memory, {k}: " + ", ".join(f"{n} {v / 2 ** 20:.1f} MiB" for n, v in m.items()))
    if out:
        with open(out, "w") as fh:
            json.dump({"layers": layers, "width": width, "batch": batch, "rounds": rounds, "reps": reps,
                       "keep_heap": kept, "ratios": rows, "per_step": per_step, "seconds": times,
                       "minor_faults": faults, "system_seconds": system, "memory": memory,
                       "environment": environment()}, fh, indent=1)
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
    p.add_argument("--keep-heap", action="store_true", help="glibc: fixed mmap/trim thresholds (see the docstring)")
    p.add_argument("--peak-of", choices=["local", "backprop"], help=argparse.SUPPRESS)
    p.add_argument("--json")
    a = p.parse_args()
    set_threads(a.threads)
    if a.peak_of:
        print(json.dumps(peak_of(a.peak_of, a.layers, a.width, a.batch, a.device, a.keep_heap)))
    else:
        main(a.layers, a.width, a.batch, a.rounds, a.reps, a.device, a.json, a.keep_heap)
