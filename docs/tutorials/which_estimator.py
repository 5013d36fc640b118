"""Which estimator should I use? Measure it on your own loss: ``sg.check_unbiased`` against exact
enumeration, then variance × f-evaluations (and × time, timed warm and repeated).

The answer depends on the loss, the number of units and what one evaluation of the loss costs, so
measure on a small version of your problem (n ≤ 20 units, where the exact gradient is computable).

    python docs/tutorials/which_estimator.py            # 20000 estimates per estimator
    python docs/tutorials/which_estimator.py --tiny     # 500: what the test suite runs
"""
import argparse
import time

import torch
import torch.nn.functional as F

import stochgrad as sg

parser = argparse.ArgumentParser(description="Choose an estimator by measuring it")
parser.add_argument("--tiny", action="store_true", help="500 estimates per estimator (the test suite's run)")
args = parser.parse_args()
estimates, calls = (500, 30) if args.tiny else (20000, 300)

# A small version of your problem: 10 binary units decoding 30 binary observations (any f works).
torch.set_num_threads(1)   # small tensors: one thread is fastest, and spares a shared machine (tutorials index: Threads)
torch.manual_seed(0)
n, d = 10, 30
W, c = 2 * torch.randn(d, n, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
x = (torch.rand(d, dtype=torch.float64) < 0.5).double()
logits = torch.randn(n, dtype=torch.float64)


def f(b):                                               # (*lead, n) -> (*lead,)
    z = b @ W.T + c
    return F.binary_cross_entropy_with_logits(z, x.expand_as(z), reduction="none").sum(-1)


# 1. Bias and variance against the exact gradient (enumeration of the 2^10 states).
print(f"{'estimator':26s} {'unbiased?':9s} {'max |z|':>8s} {'rel. var.':>10s} {'MSE':>9s} {'f evals':>7s} "
      f"{'var × evals':>11s} {'µs/est.':>8s}")
rows = []
for name in ["reinforce", "reinforce_optimal", "reinforce_loo", "disarm", "rebar", "straight_through", "gumbel_st"]:
    est = sg.get_estimator(name)
    samples = max(1, est.min_samples)
    r = sg.check_unbiased(est, f, logits, estimates=estimates, batch=500, samples=samples,
                          generator=torch.Generator().manual_seed(1), warmup=20)
    # 2. Cost: one call on 500 replicas, per estimate: 3 warm-up calls (first calls pay for allocations and
    #    set-up), then the median of 11 timed calls.
    times, gen2 = [], torch.Generator().manual_seed(2)
    for k in range(3 + 11):
        a = logits.expand(500, n).clone().requires_grad_(True)
        t0 = time.perf_counter()
        sg.expect(f, a, est, samples, gen2).sum().backward()
        if k >= 3:
            times.append((time.perf_counter() - t0) / 500)
    t = sorted(times)[len(times) // 2]
    evals = est.evaluations(n, samples)                 # f evaluations per estimate
    cost = r.variance.sum().item() * evals              # variance × evaluations: machine-independent
    rows.append((name, cost, t, r))
    print(f"{name:26s} {'yes' if r.declared_unbiased else 'no':9s} {r.max_abs_z:8.2f} {r.relative_variance:10.3g} "
          f"{r.mse:9.3g} {evals:7d} {cost:11.3g} {1e6 * t:8.1f}   {r.verdict}")

# 3. The verdicts. Variance × f-evaluations is what a fixed budget of evaluations buys, the same on
#    every machine: choose by it. Variance × time adds this machine's timing, noisy on a shared machine:
#    it names the estimators within 1.5× of the best rather than one winner (`stochgrad compare` times
#    each 5 times, interleaved, and says what is within the noise).
unbiased = [row for row in rows if row[3].declared_unbiased and row[3].passed]
print(f"unbiased, least variance × f-evaluations: {min(unbiased, key=lambda row: row[1])[0]}")
per_second = {row[0]: row[3].variance.sum().item() * row[2] for row in unbiased}
best = min(per_second.values())
close = [name for name, v in sorted(per_second.items(), key=lambda item: item[1]) if v <= 1.5 * best]
print(f"unbiased, least variance × time on this machine (within 1.5x of the best): {', '.join(close)}")
print(f"lowest mean squared error (bias included): {min(rows, key=lambda row: row[3].mse)[0]}")

# 4. Or let each site choose while it trains: `auto` measures the unbiased candidates on this very f
#    (common random numbers; at most 5 % of the run spent measuring) and uses the least variance × seconds per step (timed on its
#    first 10 calls, then frozen; cost="evaluations" ranks by f-evaluations, the same on every machine).
auto = sg.get_estimator("auto")
a = logits.expand(100, n).clone().requires_grad_(True)   # 100 examples sharing the problem
opt = torch.optim.Adam([a], lr=0.05)
gen = torch.Generator().manual_seed(3)
for _ in range(calls):
    opt.zero_grad()
    sg.expect(f, a, auto, samples=2, generator=gen).sum().backward()   # budget: 2 evaluations per example
    opt.step()
report = auto.report()
print(f"auto chose {report['chosen']} after {report['calls']} calls, by {report['criterion']}:")
for label, c in sorted(report["candidates"].items(), key=lambda item: item[1]["efficiency"]):
    print(f"  {label:30s} {c['efficiency']:10.3g}  ({c['variance']:.3g} x {c['seconds_per_step'] * 1e3:.3g} ms)")
