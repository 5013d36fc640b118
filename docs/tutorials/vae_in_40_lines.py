"""A binary-latent VAE in 40 lines, with your own model: the functional view, ``sg.expect``.

    python docs/tutorials/vae_in_40_lines.py                # MNIST, 3000 steps (1-2 minutes on 2 cores)
    python docs/tutorials/vae_in_40_lines.py --tiny         # digits, 20 steps: what the test suite runs
    python docs/tutorials/vae_in_40_lines.py --estimator reinforce_optimal
"""
import argparse

import torch
import torch.nn.functional as F
from torch import nn

import stochgrad as sg
from stochgrad.data import binarize, load

parser = argparse.ArgumentParser(description="A binary-latent VAE with sg.expect")
parser.add_argument("--estimator", default="disarm", help="any name of sg.estimators()")
parser.add_argument("--tiny", action="store_true", help="digits, 20 steps (the test suite's run)")
args = parser.parse_args()
steps, dataset = (20, "digits") if args.tiny else (3000, "mnist")

torch.set_num_threads(1)   # small tensors: one thread is fastest, and spares a shared machine (tutorials index: Threads)
torch.manual_seed(0)
gen = torch.Generator().manual_seed(0)
train, test = load(dataset, "train"), load(dataset, "test")
D, K = train.dim, 200                                   # pixels, Bernoulli latent units

# Your model: any modules. The encoder gives the logits of q(b | x), the decoder those of p(x | b).
encoder = nn.Sequential(nn.Linear(D, 256), nn.LeakyReLU(), nn.Linear(256, K))
decoder = nn.Sequential(nn.Linear(K, 256), nn.LeakyReLU(), nn.Linear(256, D))
prior = nn.Parameter(torch.zeros(K))                    # logits of p(b)
estimator = sg.get_estimator(args.estimator)            # one object per site: it may hold state
opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters(), prior], lr=1e-3)


def kl(q, p):
    """KL(Bern(σ(q)) ‖ Bern(σ(p))) summed over the units: exact, no estimator needed."""
    return (torch.sigmoid(q) * (F.logsigmoid(q) - F.logsigmoid(p))
            + torch.sigmoid(-q) * (F.logsigmoid(-q) - F.logsigmoid(-p))).sum(-1)


def neg_elbo(x):
    """−ELBO per example, (batch,): E_q[−log p(x | b)] through the estimator, plus the exact KL."""
    logits = encoder(x)                                 # (batch, K)

    def nll(b):                                         # b: (*lead, batch, K) -> (*lead, batch)
        out = decoder(b)
        return F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(-1)

    return sg.expect(nll, logits, estimator, generator=gen) + kl(logits, prior)


for step in range(steps + 1):
    x = binarize(train.images[torch.randint(len(train), (100,), generator=gen)], gen)
    loss = neg_elbo(x).mean()
    opt.zero_grad()
    loss.backward()                                     # the decoder: pathwise; the encoder: the estimator
    opt.step()
    if step % (steps // 10) == 0:
        with torch.no_grad():
            test_elbo = -neg_elbo(binarize(test.images[:1000], gen)).mean()
        print(f"step {step:5d}   train −ELBO {loss.item():7.2f}   test ELBO (one sample) {test_elbo.item():8.2f}")
