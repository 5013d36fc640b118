"""Hard gates in your network: the network view, ``sg.broadcast`` and firing-rate control.

A classifier whose 256 hidden units are each multiplied by a hard 0/1 gate computed from the input
(conditional computation, Bengio, Léonard & Courville 2013). The gates are stochastic binary neurons
trained by ``reinforce_optimal`` from the broadcast per-example loss; ``FiringRateControl`` keeps about
10% of them open. Everything else trains by ordinary back-propagation, in the same backward call.

    python docs/tutorials/hard_gates.py             # MNIST, 2000 steps (about a minute on 2 cores)
    python docs/tutorials/hard_gates.py --tiny      # digits, 20 steps: what the test suite runs
"""
import argparse

import torch
from torch import nn

import stochgrad as sg
from stochgrad.data import load

parser = argparse.ArgumentParser(description="Hard gates trained from a broadcast loss")
parser.add_argument("--estimator", default="reinforce_optimal", help="reinforce*, learned or straight_through")
parser.add_argument("--tiny", action="store_true", help="digits, 20 steps (the test suite's run)")
args = parser.parse_args()
steps, dataset = (20, "digits") if args.tiny else (2000, "mnist")

torch.set_num_threads(1)   # small tensors: one thread is fastest, and spares a shared machine (tutorials index: Threads)
torch.manual_seed(0)
train, test = load(dataset, "train"), load(dataset, "test")
D, H = train.dim, 256


class GatedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.expert = nn.Sequential(nn.Linear(D, H), nn.ReLU())        # what is computed
        self.gater = nn.Linear(D, H)                                     # whether it is computed
        # a hard gate per hidden unit, its bias pushed so that about 10% of the gates open
        self.gate = sg.FiringRateControl(sg.StochasticBinary(args.estimator), target=0.1)
        self.out = nn.Linear(H, 10)

    def forward(self, x):
        g = self.gate(self.gater(x))                                     # (batch, H), 0 or 1
        return self.out(self.expert(x) * g), g


model = GatedNet()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
gen = torch.Generator().manual_seed(0)
for step in range(steps + 1):
    idx = torch.randint(len(train), (32,), generator=gen)
    x, y = train.images[idx], train.labels[idx]
    with sg.broadcast() as graph:                       # records the stochastic decisions of this pass
        logits, g = model(x)
        loss = nn.functional.cross_entropy(logits, y, reduction="none")   # per-example losses, (batch,)
    opt.zero_grad()
    graph.backward(loss)           # gates: (h − σ)(L − c) from each example's own loss; the rest: autograd
    opt.step()
    if step % (steps // 10) == 0:
        rate = model.gate.firing_rate().mean().item()
        print(f"step {step:5d}   loss {loss.mean().item():.3f}   gates open {g.mean().item():.3f} "
              f"(moving rate {rate:.3f}, target 0.1)")

# Test: deterministic gates, as in the paper: each gate's probability σ(a + offset), thresholded so
# that 10% of the gates are open.
with torch.no_grad():
    p = torch.sigmoid(model.gate.shifted(model.gater(test.images)))        # (N, H)
    g = (p > p.quantile(0.9)).float()
    error = (model.out(model.expert(test.images) * g).argmax(-1) != test.labels).float().mean().item()
print(f"test error {100 * error:.1f}% with deterministic gates, {100 * g.mean().item():.1f}% of them open")
