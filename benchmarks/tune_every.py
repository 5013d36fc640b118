"""Does tuning a control variate every k-th call lose variance at equal steps? (``tune_every`` of ``double_cv``, ``rodeo``)

The linear VAE of the DisARM protocol (MNIST, batch 50, 200 latents) is trained by ``disarm``; on every step each
variant (an estimator with one ``tune_every``) is also called on the same batch and logits, so that it tunes on the
same sequence of problems as the others (paired: the model and the batches are shared). At the checkpoints, each
variant, frozen (``eval()``: no tuning), draws ``estimates`` gradients of the encoder's logits on a held batch; the
figure is the variance of one estimate (summed over the 200 latents, mean over the 50 examples), with its standard
error over 10 blocks of the draws.

    PYTHONPATH=$PWD/src nice -n 10 python benchmarks/tune_every.py --seeds 0 1 2 --record cpu-2core
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import stochgrad as sg
from stochgrad import data as D
from stochgrad.studies.vae import VAE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import save  # noqa: E402  (benchmarks/record.py)


def variance(model, est, x, estimates: int, gen) -> tuple[float, float]:
    """Variance of one estimate of the logits' gradient (sum over units, mean over examples) and its standard error."""
    est.eval()
    q = model.encode(x).detach()
    f = lambda h: model.learning_signal(h, x, q)   # noqa: E731
    grads = []
    for _ in range(estimates):
        a = q.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(sg.expect(f, a, est, 2, gen).sum(), a)
        grads.append(g)
    est.train()
    G = torch.stack(grads).double()                              # (estimates, B, n)
    blocks = torch.stack([b.var(0).sum(-1).mean() for b in G.chunk(10)])
    return G.var(0).sum(-1).mean().item(), (blocks.std() / len(blocks) ** 0.5).item()


def run(seed: int, variants: dict[str, dict], steps: int, checkpoints: list[int], estimates: int) -> dict:
    torch.manual_seed(seed)
    train = D.load("mnist", "train").images[:50000]
    model = VAE(784, 200, "linear", pixel_mean=train.mean(0), signed_latents=True)
    opt = torch.optim.Adam([*model.encoder.parameters(), *model.decoder.parameters()], lr=1e-4, eps=1e-7)
    prior = torch.optim.SGD([model.prior_logits], lr=1e-2)
    ests = {label: sg.get_estimator(name, **opts) for label, (name, opts) in variants.items()}
    gen, held = torch.Generator().manual_seed(seed), D.binarize(train[-50:], torch.Generator().manual_seed(99))
    disarm, out = sg.get_estimator("disarm"), {label: [] for label in variants}
    seconds = {label: 0.0 for label in variants}
    for step in range(1, steps + 1):
        x = D.binarize(train[torch.randint(0, 49950, (50,), generator=gen)], gen)
        q = model.encode(x)
        fixed = q.detach()
        f = lambda h: model.learning_signal(h, x, fixed)   # noqa: E731
        for label, est in ests.items():   # each variant tunes on this step's problem; its gradient is discarded
            t = time.process_time()
            sg.expect(f, fixed.clone().requires_grad_(True), est, 2, gen)
            seconds[label] += time.process_time() - t
        loss = sg.expect(f, q, disarm, 1, gen).mean()
        opt.zero_grad()
        prior.zero_grad()
        loss.backward()
        opt.step()
        prior.step()
        if step in checkpoints:
            for label, est in ests.items():
                v, se = variance(model, est, held, estimates, torch.Generator().manual_seed(seed * 1000 + step))
                out[label].append({"step": step, "variance": v, "se": se})
                print(f"seed {seed} step {step} {label}: {v:.4g} ± {se:.2g}", flush=True)
    return {"seed": seed, "checkpoints": out, "estimator_seconds": seconds}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--checkpoints", type=int, nargs="+", default=[500, 1000, 2000, 3000])
    p.add_argument("--estimates", type=int, default=200)
    p.add_argument("--every", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--estimators", default="double_cv,rodeo")
    p.add_argument("--record", metavar="MACHINE")
    a = p.parse_args()
    torch.set_num_threads(1)
    variants = {f"{name}(tune_every={k})": (name, {"tune_every": k}) for name in a.estimators.split(",") for k in a.every}
    runs = {f"seed{seed}": run(seed, variants, a.steps, a.checkpoints, a.estimates) for seed in a.seeds}
    if a.record:
        note = ("Variance of one estimate at equal steps, each tune_every against tune_every=1, tuned on the same "
                "problems (paired); mean over seeds in the report.")
        print(save("tune_every", a.record, runs, "python benchmarks/tune_every.py " + " ".join(sys.argv[1:]), note))


if __name__ == "__main__":
    main()
