"""Same-process A/Bs (issue 13, session 8): ``sg.expect`` with its logits' value check replaced, against overhead.py's
hand-written references. Run from the repository root:

    python benchmarks/results/s8/check_ablation.py 1000 1          # with and without the check, three estimators
    python benchmarks/results/s8/check_ablation.py 1000 1 parts    # which part of the check costs (reinforce)
"""
import importlib
import math
import random
import statistics
import sys
import time

import torch

sys.path.insert(0, "benchmarks")
torch.set_num_threads(1)
import overhead as ov  # noqa: E402

E = importlib.import_module("stochgrad.expect")
gen = torch.Generator().manual_seed(0)
REAL = E.check_logits
VARIANTS = {  # check_logits replacements: what each does of the real check's value read
    "none": lambda l, name="logits", verdict=None: l,
    "data": lambda l, name="logits", verdict=None: (l.data, l)[1],
    "sum": lambda l, name="logits", verdict=None: (l.data.sum(), l)[1],
    "full": lambda l, name="logits", verdict=None: (math.isfinite(l.data.sum().item()), l)[1],
}


def with_check(name, check):
    """stochgrad's step for ``name`` with ``check`` as expect's check_logits (the real one: the same wrapper)."""
    inner = ov.ours(name, gen)

    def call(a):
        E.check_logits = check
        try:
            inner(a)
        finally:
            E.check_logits = REAL
    return call


def main():
    D, B = int(sys.argv[1]), int(sys.argv[2])
    parts = sys.argv[3:] == ["parts"]
    a = torch.randn(B, D, requires_grad=True)
    for name in ["reinforce"] if parts else ["reinforce", "straight_through", "reinforce_loo"]:
        c = {"ours": with_check(name, REAL), **{k: with_check(name, v) for k, v in VARIANTS.items()
                                                 if parts or k == "none"}}
        if not parts:
            c.update({"plain": ov.reference(name, gen), "tuned": ov.reference(name, gen, tuned=True)})
        t = ov.rounds(c, a, 150, 60, time.process_time, random.Random(0))
        print(name, D, B, "us/call ours %.0f" % (1e6 * statistics.median(t["ours"])),
              *(f"{k}/{d} {ov.cell(ov.ratio(t, k, d))}" for k, d in
                ([(k, "none") for k in c] if parts else
                 [("ours", "plain"), ("ours", "tuned"), ("none", "tuned"), ("ours", "none")])))


if __name__ == "__main__":
    main()
