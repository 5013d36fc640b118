"""Same-process A/B (issue 13, session 8): which part of the logits' value check costs inside a call (reinforce).
Run from the repository root: python benchmarks/results/s8/check_parts.py 1000 1"""
import sys, random, time, torch, math
sys.path.insert(0, "benchmarks")
torch.set_num_threads(1)
import overhead as ov
import importlib
E = importlib.import_module("stochgrad.expect")
gen = torch.Generator().manual_seed(0)
real = E.check_logits
def v_data(l, name="logits", verdict=None):
    l.data; return l
def v_sum(l, name="logits", verdict=None):
    l.data.sum(); return l
def v_full(l, name="logits", verdict=None):
    math.isfinite(l.data.sum().item()); return l
def v_none(l, name="logits", verdict=None):
    return l
def with_(chk):
    inner = ov.ours("reinforce", gen)
    def call(a):
        E.check_logits = chk
        try: inner(a)
        finally: E.check_logits = real
    return call
D, B = int(sys.argv[1]), int(sys.argv[2])
a = torch.randn(B, D, requires_grad=True)
c = {"real": with_(real), "none": with_(v_none), "data": with_(v_data), "sum": with_(v_sum), "full": with_(v_full)}
t = ov.rounds(c, a, 150, 60, time.process_time, random.Random(0))
print("us/call none %.0f" % (1e6*sorted(t['none'])[30]))
for k in c:
    print(k, "/ none", ov.cell(ov.ratio(t, k, "none")))
