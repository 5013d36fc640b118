"""The time plan of ``benchmarks/device/i12.sh``, derived from the machine instead of fixed seconds.

Measures, single-threaded, the steps/s of stochgrad's linear-VAE training step (disarm, batch 50, 784-200-784)
and the seconds of one test evaluation (the 100-sample bound and the one-sample ELBO on ``--test-examples``
images), then prints shell assignments (and ``#`` comments that explain them) for i12.sh to ``eval``:

* the wall: what one 20k-step run and its two evaluations need (the speed comparison before one of them), or
  the long runs' ``--long-steps``, whichever is longer; ``--wall`` sets it instead;
* ``LONG_S``: training seconds of the long runs: the wall minus start-up and their three evaluations;
* ``CAP`` / ``SPEED_CAP``: the training-seconds cap of a 20k run (alone / after the speed comparison): all its
  steps ×1.1, or, under a given ``--wall`` too short, what fits (the plan then says how many steps);
* ``G_*``: the gating runs' training seconds; ``KILL``: the hard ``timeout``, 1.2 × the wall + 30 s (room for a
  machine slower under load than calibrated).

Run: ``python benchmarks/device/i12_plan.py`` (i12.sh does).
"""
from __future__ import annotations

import argparse
import math
import time

import torch

STARTUP = 10.0     # seconds to start a run (imports, MNIST load), generous
MARGIN = 20.0      # seconds kept free at the end of every process


def calibrate(test_examples: int, steps: int = 200):
    import stochgrad as sg
    from stochgrad.studies.vae import BernoulliVAE

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    data = torch.rand(500, 784, generator=gen)
    model = BernoulliVAE(784, 200, "linear", pixel_mean=data.mean(0), signed_latents=True)
    opt = torch.optim.Adam(model.parameters(), 1e-4, eps=1e-7)
    est = sg.get_estimator("disarm")

    def step(i):
        x = sg.sampling.bernoulli(data[(i % 10) * 50:(i % 10 + 1) * 50], (), gen)
        loss = model(x, est, 1, gen).mean()
        loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for i in range(10):
        step(i)
    t = time.perf_counter()
    for i in range(steps):
        step(i)
    rate = steps / (time.perf_counter() - t)
    t = time.perf_counter()
    with torch.no_grad():
        x = sg.sampling.bernoulli(data, (), gen)
        model.iw_bound(x, 100, gen)
        model.iw_bound(x, 1, gen)
    evaluation = (time.perf_counter() - t) * math.ceil(test_examples / 500)
    return rate, evaluation


def plan(wall: float, rate: float, evaluation: float, steps: int, speed_steps: int, safety: float,
         long_steps: int = 0):
    """The budgets (seconds) of i12.sh's processes; ``rate`` is scaled by ``safety`` and ``evaluation`` divided by
    it (sixteen processes at once run slower than the calibration alone). ``wall`` 0: the wall that every
    ``steps``-step run needs (or the long runs' ``long_steps``, if more); else that wall, runs capped to fit."""
    rate, evaluation = rate * safety, evaluation / safety
    run = lambda evals: STARTUP + evals * evaluation    # noqa: E731  (overhead of one run besides training)
    need = steps / rate * 1.1                           # training seconds of one run, with 10% to spare
    speed = speed_steps / rate                          # vae_plain.py speed, before one 20k run (V7)
    needed = MARGIN + max(run(2) + need + speed, run(3) + long_steps / rate)
    wall = wall or needed
    budgets = dict(LONG_S=wall - MARGIN - run(3), CAP=min(need, wall - MARGIN - run(2)),
                   SPEED_CAP=min(need, wall - MARGIN - run(2) - speed), G_ST=wall - 50, G_RO=wall - 50,
                   G_SMALL=(wall - 3 * 45) / 3, G_RECT=(wall - 2 * 45) / 2, KILL=1.2 * wall + 30)
    return budgets, rate, evaluation, wall


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wall", type=float, default=0.0, help="seconds each process may take (0: what the runs need)")
    p.add_argument("--long-steps", type=int, default=0, help="make the wall long enough for this many long-run steps")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--test-examples", type=int, default=0, help="0: the 10,000 MNIST test images")
    p.add_argument("--speed-reps", type=int, default=300, help="vae_plain.py speed --reps (5 rounds, 3 estimators)")
    p.add_argument("--safety", type=float, default=0.75)
    a = p.parse_args()
    rate, evaluation = calibrate(a.test_examples or 10000)
    speed_steps = 3 * 5 * 2 * (a.speed_reps + 5)
    b, r, e, wall = plan(a.wall, rate, evaluation, a.steps, speed_steps, a.safety, a.long_steps)
    print(f"# calibrated: {rate:.0f} VAE steps/s, {evaluation:.1f} s per test evaluation; planned with ×{a.safety} "
          f"({r:.0f} steps/s, {e:.1f} s); wall {wall:.0f} s per process ({'given' if a.wall else 'derived'})")
    print(f"# long runs: ~{max(0, b['LONG_S']) * r:,.0f} steps in {b['LONG_S']:.0f} s")
    for name in ("CAP", "SPEED_CAP"):
        got = max(0, b[name]) * r
        print(f"# {name}: {a.steps}-step runs {'fit' if got >= a.steps else f'DO NOT FIT: ~{got:,.0f} steps'}")
    for k, v in b.items():
        print(f"{k}={max(1, int(v))}")


if __name__ == "__main__":
    main()
