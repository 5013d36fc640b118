"""Per-phase process CPU time of the library's local step and the hand-written rule, in the benchmark's process
(all candidates built, keep-heap optional), interleaved step by step; medians over rounds."""
import sys, time, random, statistics
sys.path.insert(0, "benchmarks")
import torch
from torch import nn
torch.set_num_threads(1)
import stochgrad as sg
import local_vs_backprop as lb
if "--keep-heap" in sys.argv: lb.keep_heap()
fns = lb.steps(8, 1024, 128, "cpu")
for k in ("local", "backprop"): lb.held_bytes(fns[k], fns[k].model)
for f in fns.values(): f()
x = torch.rand(128, 1024); y = torch.randint(0, 10, (128,))
now = time.process_time
lm = fns["local"].model; lopt = torch.optim.SGD(lm.parameters(), lr=0.01)
pm = fns["local, plain torch"].model; popt = torch.optim.SGD(pm.parameters(), lr=0.01); plain = lb.PlainLocal(pm)
G = sg.graph.Graph
def lib(rec):
    t0 = now(); lopt.zero_grad(); t1 = now()
    with sg.broadcast(local=True) as graph:
        loss = nn.functional.cross_entropy(lm(x), y, reduction="none")
    t2 = now()
    orig = torch.autograd.backward; mark = []
    def bw(*a, **k):
        mark.append(now()); return orig(*a, **k)
    torch.autograd.backward = bw
    try: graph.backward(loss)
    finally: torch.autograd.backward = orig
    t4 = now(); lopt.step(); t5 = now()
    rec.append((t1 - t0, t2 - t1, mark[0] - t2, t4 - mark[0], t5 - t4))
def pl(rec):
    t0 = now(); popt.zero_grad(); t1 = now()
    self = plain; DECAY = lb.DECAY
    inputs, hs, ps = [], [], []
    with torch.no_grad():
        h = x
        for lin, gen in zip(self.linears[:-1], self.generators):
            inputs.append(h)
            p = torch.sigmoid(torch.addmm(lin.bias, h, lin.weight.t()))
            u = torch.rand(p.shape, dtype=p.dtype, device=p.device)
            h = torch.lt(u, p, out=u); ps.append(p); hs.append(h)
    loss = nn.functional.cross_entropy(self.linears[-1](h), y, reduction="none")
    t2 = now()
    loss.mean().backward()
    t3 = now()
    with torch.no_grad():
        L, B = loss.detach(), loss.shape[0]
        w = torch.stack([L, torch.ones_like(L)]) / B
        for k, lin in enumerate(self.linears[:-1]):
            score = hs[k] - ps[k]
            num, den = self.num[k], self.den[k]
            c = torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), 0.0)
            stats = w @ score.square()
            num.lerp_(stats[0], 1 - DECAY); den.lerp_(stats[1], 1 - DECAY)
            g = (L.unsqueeze(-1) / B - c / B).mul_(score)
            lin.weight.grad = g.t().mm(inputs[k]); lin.bias.grad = g.sum(0)
    t4 = now(); popt.step(); t5 = now()
    rec.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4))
recs = {"lib": [], "plain": []}
for r in range(int(sys.argv[1])):
    order = [("lib", lib), ("plain", pl)]; random.shuffle(order)
    for k, f in order: f(recs[k])
names = ["zero_grad", "forward", "lib: scores / plain: readout bwd", "lib: autograd.backward / plain: per-layer", "sgd step"]
for k, v in recs.items():
    print(k, " ".join(f"{n}={statistics.median(c[i] for c in v)*1e3:.2f}ms" for i, n in enumerate(names)), f"total={statistics.median(sum(c) for c in v)*1e3:.1f}ms")
