"""Categorical latents: ``n`` units of ``K`` classes each, one-hot samples, the same estimators.

Pass ``distribution="categorical"`` (or a ``torch.distributions.OneHotCategorical``) to ``sg.expect``:
logits ``(*batch, n, K)``, samples one-hot ``(*lead, *batch, n, K)``, class ``k`` of unit ``i`` with
probability ``softmax(logits[..., i, :])[k]``. Part 1 checks estimators against the exact gradient on
a small problem (K^n states enumerated); part 2 trains a VAE with 20 latent units of 10 classes.

    python docs/tutorials/categorical.py             # 20000 estimates; MNIST, 2000 steps
    python docs/tutorials/categorical.py --tiny      # 500 estimates; digits, 20 steps (the test suite's run)
"""
import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn

import stochgrad as sg
from stochgrad.data import binarize, load

parser = argparse.ArgumentParser(description="Categorical latents with sg.expect")
parser.add_argument("--tiny", action="store_true", help="small sizes (the test suite's run)")
args = parser.parse_args()
estimates, steps, dataset = (500, 20, "digits") if args.tiny else (20000, 2000, "mnist")
gen = torch.Generator().manual_seed(0)

# 1. Which estimators are unbiased here? 3 units of 4 classes: 4^3 = 64 states, exact by enumeration.
torch.set_num_threads(1)   # small tensors: one thread is fastest, and spares a shared machine (tutorials index: Threads)
torch.manual_seed(0)
n, K = 3, 4
W = torch.randn(n * K, dtype=torch.float64)
logits = torch.randn(n, K, dtype=torch.float64)
f = lambda h: (h.flatten(-2) @ W - 0.5).square()          # one-hot (*lead, n, K) -> (*lead,)
print(f"{'estimator':20s} {'unbiased?':9s} {'max |z|':>8s} {'rel. var.':>10s}  verdict")
for name in ["reinforce", "reinforce_optimal", "reinforce_loo", "carms", "rebar", "straight_through",
             "gumbel_st", "gumbel_rao", "reinmax"]:
    est = sg.get_estimator(name)
    r = sg.check_unbiased(est, f, logits, estimates=estimates, batch=500, samples=max(1, est.min_samples),
                          generator=torch.Generator().manual_seed(1), warmup=20, distribution="categorical")
    print(f"{name:20s} {'yes' if r.declared_unbiased else 'no':9s} {r.max_abs_z:8.2f} "
          f"{r.relative_variance:10.3g}  {r.verdict}")

# 2. A VAE with categorical latents: 20 units of 10 classes, a uniform prior.
train, test = load(dataset, "train"), load(dataset, "test")
D, n, K = train.dim, 20, 10
encoder = nn.Sequential(nn.Linear(D, 256), nn.LeakyReLU(), nn.Linear(256, n * K))
decoder = nn.Sequential(nn.Linear(n * K, 256), nn.LeakyReLU(), nn.Linear(256, D))
estimator = sg.get_estimator("reinforce_loo")
opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)


def neg_elbo(x):
    """−ELBO per example: E_q[−log p(x | h)] through the estimator, plus the exact KL to uniform."""
    q = encoder(x).unflatten(-1, (n, K))                  # (batch, n, K)

    def nll(h):                                           # h: one-hot (*lead, batch, n, K) -> (*lead, batch)
        out = decoder(h.flatten(-2))
        return F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(-1)

    kl = (F.softmax(q, -1) * (F.log_softmax(q, -1) + math.log(K))).sum((-2, -1))
    return sg.expect(nll, q, estimator, samples=2, generator=gen, distribution="categorical") + kl


for step in range(steps + 1):
    x = binarize(train.images[torch.randint(len(train), (100,), generator=gen)], gen)
    loss = neg_elbo(x).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % (steps // 5) == 0:
        with torch.no_grad():
            test_elbo = -neg_elbo(binarize(test.images[:1000], gen)).mean()
        print(f"step {step:5d}   train −ELBO {loss.item():7.2f}   test ELBO (two samples) {test_elbo.item():8.2f}")
