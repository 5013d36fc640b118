"""Same-process A/B (issue 13, session 8): expect with and without the logits' value check, against the hand-written
references of overhead.py. Run from the repository root: python benchmarks/results/s8/check_ablation.py 1000 1"""
import sys, random, time, torch
sys.path.insert(0, "benchmarks")
torch.set_num_threads(1)
import overhead as ov
import stochgrad as sg, importlib; E = importlib.import_module("stochgrad.expect")
gen = torch.Generator().manual_seed(0)
real = E.check_logits
def nocheck(logits, name="logits", verdict=None):
    return logits
def ours_nocheck(name):
    inner = ov.ours(name, gen)
    def call(a):
        E.check_logits = nocheck
        try: inner(a)
        finally: E.check_logits = real
    return call
def ours_wrapped(name):  # same wrapper cost, real check
    inner = ov.ours(name, gen)
    def call(a):
        E.check_logits = real
        try: inner(a)
        finally: E.check_logits = real
    return call
D, B = int(sys.argv[1]), int(sys.argv[2])
a = torch.randn(B, D, requires_grad=True)
for name in ["reinforce", "straight_through", "reinforce_loo"]:
    c = {"tuned": ov.reference(name, gen, tuned=True), "plain": ov.reference(name, gen),
         "ours": ours_wrapped(name), "nocheck": ours_nocheck(name)}
    t = ov.rounds(c, a, 150, 60, time.process_time, random.Random(0))
    print(name, D, B, "us/call ours %.0f" % (1e6*sorted(t['ours'])[30]),
          "ours/plain", ov.cell(ov.ratio(t, "ours", "plain")), "ours/tuned", ov.cell(ov.ratio(t, "ours", "tuned")),
          "nocheck/tuned", ov.cell(ov.ratio(t, "nocheck", "tuned")), "ours/nocheck", ov.cell(ov.ratio(t, "ours", "nocheck")))
