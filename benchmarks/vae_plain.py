"""A plain-torch reference loop of the linear binary VAE under the DisARM protocol, written by hand without
stochgrad, to set beside ``stochgrad train vae --protocol disarm`` at equal steps (``reproduce/vae_equal_steps.py``).

The model and protocol are those of :mod:`stochgrad.studies.vae` (google-research
``disarm/binary/experiment_launcher_singlelayer.py``): 784-200 logistic encoder on ``x − pixel mean``,
200-784 logistic decoder on ``2b − 1``, learned prior logits; Xavier-uniform weights, zero biases, the
decoder bias at the logit of the pixel means; the first 50,000 MNIST training images, a fresh permutation
every epoch, batch 50, dynamic binarisation; Adam (eps 1e-7) at 1e-4 for encoder and decoder, SGD at 1e-2
for the prior. The encoder's gradient is written out for three estimators, each fed the per-example
``f(b) = −log p(x | b) − log p(b) + log q(b | x)`` with q fixed inside f:

* ``disarm``: ``½(f(b) − f(b̃))·(−1)^b̃·1[b ≠ b̃]·σ(|a|)`` (Dong, Mnih & Tucker 2020, Eq. 7);
* ``reinforce_loo``: ``½[(f(b₁) − f(b₂))(b₁ − σ(a)) + (f(b₂) − f(b₁))(b₂ − σ(a))]`` (Kool et al. 2019);
* ``straight_through_sigmoid``: ``h = b + σ(a) − stop(σ(a))`` (seed §3.2.1, scaled by σ′(a)).

Two modes:

``python benchmarks/vae_plain.py train --estimator disarm --steps 20000 --eval-at 5000 --out DIR``
    trains the plain loop and writes ``DIR/summary.json`` (same keys as ``stochgrad train vae``) and
    ``DIR/metrics.csv``.
``python benchmarks/vae_plain.py speed [--estimators disarm,reinforce_loo] [--reps 200] [--rounds 5]``
    times a training step of the plain loop and of stochgrad's (``BernoulliVAE.loss`` + the same
    optimisers) interleaved in one process, on the same batches, and prints the ratio of times per step.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

ESTIMATORS = ("disarm", "reinforce_loo", "straight_through_sigmoid")


class PlainVAE(nn.Module):
    def __init__(self, pixel_mean: torch.Tensor, latent: int = 200):
        super().__init__()
        d = pixel_mean.numel()
        # nn.Linear's own initialisation first, then Xavier/zeros: the global RNG moves as in stochgrad's model,
        # so the same seed gives the same initial weights (and, with the same generator, the same batches)
        enc, dec = nn.Linear(d, latent), nn.Linear(latent, d)
        self.enc_w, self.enc_b, self.dec_w, self.dec_b = enc.weight, enc.bias, dec.weight, dec.bias
        self.prior = nn.Parameter(torch.zeros(latent))
        with torch.no_grad():
            nn.init.xavier_uniform_(self.enc_w)
            nn.init.xavier_uniform_(self.dec_w)
            self.enc_b.zero_()
        mean = pixel_mean.clamp(1e-3, 1 - 1e-3)
        with torch.no_grad():
            self.dec_b.copy_(torch.log(mean) - torch.log1p(-mean))
        self.register_buffer("mean", mean)

    def f(self, b, x, q):
        """``−log p(x | b) − log p(b) + log q(b | x)`` per sample, ``b`` ``(*lead, B, latent)``."""
        out = F.linear(2 * b - 1, self.dec_w, self.dec_b)
        nll = F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(-1)
        log_prior = (b * self.prior - F.softplus(self.prior)).sum(-1)
        log_q = (b * q - F.softplus(q)).sum(-1)
        return nll - log_prior + log_q

    def loss(self, x, estimator: str, gen):
        """Mean −ELBO estimate over the batch; its backward is the chosen estimator's gradient."""
        a = F.linear(x - self.mean, self.enc_w, self.enc_b)
        q = a.detach()
        p = torch.sigmoid(q)
        if estimator == "disarm":
            u = torch.rand(a.shape, generator=gen)
            b, b_anti = (u < p).float(), (1 - u < p).float()
            fs = self.f(torch.stack([b, b_anti]), x, q)
            g = 0.5 * (fs[0] - fs[1]).detach().unsqueeze(-1) * (1 - 2 * b_anti) * (b != b_anti).float() * torch.sigmoid(q.abs())
            value = fs.mean(0)
        elif estimator == "reinforce_loo":
            b = (torch.rand((2, *a.shape), generator=gen) < p).float()
            fs = self.f(b, x, q)
            d = (fs[0] - fs[1]).detach().unsqueeze(-1)
            g = 0.5 * (d * (b[0] - p) - d * (b[1] - p))
            value = fs.mean(0)
        elif estimator == "straight_through_sigmoid":
            s = torch.sigmoid(a)
            h = (torch.rand(a.shape, generator=gen) < p).float() + s - s.detach()
            return self.f(h, x, q).mean()
        else:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
        # value carries the decoder's and prior's pathwise gradient; the surrogate adds g to the logits
        return value.mean() + (a * g).sum() / x.shape[0] - (a * g).detach().sum() / x.shape[0]

    @torch.no_grad()
    def iw_bound(self, x, k, gen):
        q = F.linear(x - self.mean, self.enc_w, self.enc_b)
        b = (torch.rand((k, *q.shape), generator=gen) < torch.sigmoid(q)).float()
        return torch.logsumexp(-self.f(b, x, q), 0) - math.log(k)


def mnist_split():
    from stochgrad import data as D

    train, test = D.load("mnist", "train"), D.load("mnist", "test")
    return train.images[:50000], test.images


def optimisers(params_net, prior):
    return torch.optim.Adam(params_net, lr=1e-4, eps=1e-7), torch.optim.SGD([prior], lr=1e-2)


@torch.no_grad()
def test_bounds(model, x_test, k, seed):
    gen = torch.Generator().manual_seed(seed + 1)
    bounds, one = [], []
    for chunk in x_test.split(500):
        x = (torch.rand(chunk.shape, generator=gen) < chunk).float()
        bounds.append(model.iw_bound(x, k, gen))
        one.append(model.iw_bound(x, 1, gen))
    return {f"test_elbo_{k}_samples": torch.cat(bounds).mean().item(), "test_elbo_1_sample": torch.cat(one).mean().item()}


def train(a):
    torch.manual_seed(a.seed)
    x_train, x_test = mnist_split()
    if a.test_examples:
        x_test = x_test[: a.test_examples]
    model = PlainVAE(x_train.mean(0))
    opt, prior_opt = optimisers([model.enc_w, model.enc_b, model.dec_w, model.dec_b], model.prior)
    gen = torch.Generator().manual_seed(a.seed)
    n, bsz = len(x_train), 50
    os.makedirs(a.out, exist_ok=True)
    ckpt = os.path.join(a.out, "checkpoint.pt")
    st = dict(step=0, seconds=0.0, perm=None, pos=n, window=[], epoch_sum=0.0, epoch_n=0, last_epoch=float("nan"),
              evaluations=[])
    if a.resume and os.path.exists(ckpt):   # exact resume: weights, optimisers, noise, epoch position, reports
        saved = torch.load(ckpt, weights_only=False)
        if (saved["estimator"], saved["seed"]) != (a.estimator, a.seed):
            raise SystemExit(f"{ckpt} is from {saved['estimator']} seed {saved['seed']}, not this command's")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        prior_opt.load_state_dict(saved["prior_opt"])
        gen.set_state(saved["gen"])
        st = saved["state"]
    rows = []
    if st["step"] and os.path.exists(os.path.join(a.out, "metrics.csv")):
        with open(os.path.join(a.out, "metrics.csv")) as fh:
            rows = [r for r in list(csv.reader(fh))[1:] if int(r[0]) <= st["step"]]
    fh = open(os.path.join(a.out, "metrics.csv"), "w", newline="")
    w = csv.writer(fh)
    w.writerow(["step", "train_elbo", "seconds"])
    w.writerows(rows)

    def save():   # atomic: a kill mid-write leaves the previous checkpoint
        torch.save({"estimator": a.estimator, "seed": a.seed, "model": model.state_dict(), "opt": opt.state_dict(),
                    "prior_opt": prior_opt.state_dict(), "gen": gen.get_state(), "state": st}, ckpt + ".tmp")
        os.replace(ckpt + ".tmp", ckpt)

    def last_epoch_report():   # the last full epoch's mean one-sample ELBO (the current one, when complete)
        if st["epoch_n"] == n // bsz or not math.isfinite(st["last_epoch"]):
            return st["epoch_sum"] / max(st["epoch_n"], 1)
        return st["last_epoch"]
    while st["step"] < a.steps and not (a.max_seconds and st["seconds"] >= a.max_seconds):
        t0 = time.perf_counter()
        if st["pos"] + bsz > n:
            if st["epoch_n"]:
                st["last_epoch"], st["epoch_sum"], st["epoch_n"] = st["epoch_sum"] / st["epoch_n"], 0.0, 0
            st["perm"], st["pos"] = torch.randperm(n, generator=gen), 0
        xb = x_train[st["perm"][st["pos"]:st["pos"] + bsz]]
        st["pos"] += bsz
        x = (torch.rand(xb.shape, generator=gen) < xb).float()
        loss = model.loss(x, a.estimator, gen)
        value = -loss.item()
        opt.zero_grad()
        prior_opt.zero_grad()
        loss.backward()
        opt.step()
        prior_opt.step()
        st["seconds"] += time.perf_counter() - t0
        st["step"] += 1
        step = st["step"]
        st["window"].append(value)
        st["epoch_sum"], st["epoch_n"] = st["epoch_sum"] + value, st["epoch_n"] + 1
        if step % a.log_every == 0:
            w.writerow([step, sum(st["window"]) / len(st["window"]), st["seconds"]])
            fh.flush()
            st["window"] = []
        if step in a.eval_at:
            st["evaluations"].append({"step": step, "train_seconds": st["seconds"],
                                      "train_elbo_last_epoch": last_epoch_report(),
                                      **test_bounds(model, x_test, a.test_samples, a.seed)})
        if step % a.checkpoint_every == 0:
            save()
    fh.close()
    save()
    step, seconds = st["step"], st["seconds"]
    summary = {"estimator": a.estimator, "implementation": "plain torch", "protocol": "disarm", "model": "linear",
               "seed": a.seed, "steps": step, "train_seconds": seconds, "steps_per_second": step / seconds,
               "train_elbo_last_epoch": last_epoch_report(),
               **test_bounds(model, x_test, a.test_samples, a.seed), "evaluations": st["evaluations"]}
    with open(os.path.join(a.out, "summary.json"), "w") as out:
        json.dump(summary, out, indent=1)
    print(json.dumps({k: v for k, v in summary.items() if k != "evaluations"}))


def speed(a):
    """Interleaved timing of one training step, plain loop against stochgrad, on identical batches."""
    import stochgrad as sg
    from stochgrad.studies.vae import BernoulliVAE

    torch.manual_seed(0)
    x_train, _ = mnist_split()
    mean = x_train.mean(0)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for name in a.estimators.split(","):
        plain = PlainVAE(mean)
        p_opts = optimisers([plain.enc_w, plain.enc_b, plain.dec_w, plain.dec_b], plain.prior)
        lib = BernoulliVAE(784, 200, "linear", pixel_mean=mean, demean=True, signed_latents=True, bias_init=True)
        l_opts = optimisers([*lib.encoder.parameters(), *lib.decoder.parameters()], lib.prior_logits)
        est = sg.get_estimator(name)
        samples = max(1, est.min_samples)
        perm = torch.randperm(len(x_train), generator=gen)

        def batch(i):
            xb = x_train[perm[(i * 50) % 49950:(i * 50) % 49950 + 50]]
            return (torch.rand(xb.shape, generator=gen) < xb).float()

        def plain_step(x):
            loss = plain.loss(x, name, gen)
            loss.item()
            for o in p_opts:
                o.zero_grad()
            loss.backward()
            for o in p_opts:
                o.step()

        def lib_step(x):
            loss = lib(x, est, samples, gen).mean()
            loss.item()
            for o in l_opts:
                o.zero_grad()
            loss.backward()
            for o in l_opts:
                o.step()

        times, ratios = {"plain": [], "stochgrad": []}, []
        for r in range(a.rounds):
            xs = [batch(r * a.reps + i) for i in range(a.reps)]   # the same batches for both, made untimed
            order = [("plain", plain_step), ("stochgrad", lib_step)]
            for label, fn in (order if r % 2 == 0 else order[::-1]):   # alternate who goes first
                for x in xs[:5]:
                    fn(x)
                t = time.process_time()   # this process's CPU time: other processes' load does not count
                for x in xs:
                    fn(x)
                times[label].append((time.process_time() - t) / a.reps)
            ratios.append(times["stochgrad"][-1] / times["plain"][-1])
        tp, tl = statistics.median(times["plain"]), statistics.median(times["stochgrad"])
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        rows.append({"estimator": name, "plain_steps_per_second": 1 / tp, "stochgrad_steps_per_second": 1 / tl,
                     "time_ratio_stochgrad_over_plain": statistics.median(ratios), "ratio_quartiles": [q[0], q[2]],
                     "rounds": a.rounds, "reps": a.reps, "clock": "process CPU time, 1 thread"})
    print("| estimator | plain steps/CPU-s | stochgrad steps/CPU-s | time per step, stochgrad ÷ plain (median of rounds) "
          "| quartiles |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['estimator']} | {r['plain_steps_per_second']:.0f} | {r['stochgrad_steps_per_second']:.0f} | "
              f"{r['time_ratio_stochgrad_over_plain']:.3f} | {r['ratio_quartiles'][0]:.3f}–{r['ratio_quartiles'][1]:.3f} |")
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "speed.json"), "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("train")
    t.add_argument("--estimator", default="disarm", choices=ESTIMATORS)
    t.add_argument("--steps", type=int, default=20000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--eval-at", type=int, nargs="*", default=[])
    t.add_argument("--max-seconds", type=float, default=0.0)
    t.add_argument("--log-every", type=int, default=100)
    t.add_argument("--test-samples", type=int, default=100)
    t.add_argument("--test-examples", type=int, default=0)
    t.add_argument("--out", default="runs/vae_plain")
    t.add_argument("--checkpoint-every", type=int, default=1000)
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (if there is one)")
    s = sub.add_parser("speed")
    s.add_argument("--estimators", default=",".join(ESTIMATORS))
    s.add_argument("--reps", type=int, default=200)
    s.add_argument("--rounds", type=int, default=5)
    s.add_argument("--out", default="")
    a = p.parse_args()
    torch.set_num_threads(1)
    train(a) if a.mode == "train" else speed(a)
