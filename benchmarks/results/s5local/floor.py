"""The matmul floor of local/backprop at 8x1024, batch 128, under the same conditions as a benchmark run:
'mm local' = the local step's matmuls alone (8 forward addmm + 8 weight-gradient mm), 'mm backprop' = backprop's
(the same + 7 input-gradient mm); plus the shared per-layer sampling (sigmoid, rand, threshold) and SGD step."""
import sys, time, random, statistics
sys.path.insert(0, "benchmarks")
import torch
torch.set_num_threads(1)
from overhead import timed_rounds, ratio, cell
L, W, B = 8, 1024, 128
torch.manual_seed(0)
Ws = [torch.randn(W, W) * 0.03 for _ in range(L)]; bs = [torch.zeros(W) for _ in range(L)]
x = torch.rand(B, W); g = torch.randn(B, W)
def fwd():
    h = x; hs = []
    for w, b in zip(Ws, bs):
        hs.append(h); h = torch.addmm(b, h, w.t())
    return hs
def mm_local():
    hs = fwd()
    for k in range(L): g.t().mm(hs[k]); g.sum(0)
def mm_backprop():
    hs = fwd()
    for k in range(L - 1, -1, -1):
        g.t().mm(hs[k]); g.sum(0)
        if k: g.mm(Ws[k])
def sampling():
    for _ in range(L):
        p = torch.sigmoid(g); u = torch.rand(B, W); torch.lt(u, p, out=u)
def sgd():
    for w in Ws: w.add_(Ws[0], alpha=-1e-9)
fns = {"mm local": mm_local, "mm backprop": mm_backprop, "sampling (8 layers)": sampling, "sgd step (8 W)": sgd}
for f in fns.values(): f()
t = timed_rounds(fns, 1, int(sys.argv[1]) if len(sys.argv) > 1 else 40, time.process_time, random.Random(0))
for k in fns: print(f"  {k:22s} {statistics.median(t[k])*1e3:6.1f} ms")
print("  mm local / mm backprop", cell(ratio(t, "mm local", "mm backprop")))
