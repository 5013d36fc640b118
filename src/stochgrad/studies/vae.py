"""``stochgrad train vae``: the binary-latent VAE benchmark (NOTES.md): 200 Bernoulli latent units,
``linear`` (784-200 logistic encoder and decoder) or ``nonlinear`` (hidden layers of 200, LeakyReLU),
dynamically binarised data, Adam.

Per example, ``−ELBO = E_q[−log p(x | z)] + KL(q(z | x) ‖ p(z))``: the expectation goes through
:func:`stochgrad.expect` with the chosen estimator (the decoder gets its pathwise gradient), the KL
between factorised Bernoullis is exact. The test bound is the 100-sample importance-weighted bound
``log mean_k p(x, z_k) / q(z_k | x)``.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import data as D
from ..estimators import REGISTRY, get_estimator
from ..expect import expect
from ..runinfo import write_json
from ..sampling import Sharded, bernoulli
from .training import (CheckpointError, NonFiniteError, datasets_or_fail, Metrics, all_mean, distributed_from_env, diverged,
                       fail, load_checkpoint, plot_curves, prepare_out, save_checkpoint)


def bernoulli_kl(q_logits: Tensor, p_logits: Tensor) -> Tensor:
    """``KL(Bern(σ(q)) ‖ Bern(σ(p)))`` summed over the last dimension."""
    q = torch.sigmoid(q_logits)
    return (q * (F.logsigmoid(q_logits) - F.logsigmoid(p_logits))
            + (1 - q) * (F.logsigmoid(-q_logits) - F.logsigmoid(-p_logits))).sum(-1)


def _mlp(sizes, hidden_act):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(hidden_act())
    return nn.Sequential(*layers)


class BernoulliVAE(nn.Module):
    """Encoder ``x → logits of q(z | x)``, decoder ``z → logits of p(x | z)``, learned prior logits."""

    def __init__(self, x_dim: int, latent: int = 200, model: str = "linear", hidden: int = 200,
                 pixel_mean: Tensor | None = None):
        super().__init__()
        if model not in ("linear", "nonlinear"):
            raise ValueError(f"model must be 'linear' or 'nonlinear', got {model!r}")
        mid = [] if model == "linear" else [hidden, hidden]
        self.encoder = _mlp([x_dim, *mid, latent], lambda: nn.LeakyReLU(0.3))
        self.decoder = _mlp([latent, *mid[::-1], x_dim], lambda: nn.LeakyReLU(0.3))
        self.prior_logits = nn.Parameter(torch.zeros(latent))
        mean = torch.full((x_dim,), 0.5) if pixel_mean is None else pixel_mean.clamp(1e-3, 1 - 1e-3)
        with torch.no_grad():  # decoder output starts at the data's pixel means
            self.decoder[-1].bias.copy_(torch.logit(mean))
        self.register_buffer("pixel_mean", mean)

    def neg_log_lik(self, z: Tensor, x: Tensor) -> Tensor:
        """``−log p(x | z)``: ``z`` ``(*lead, B, latent)``, ``x`` ``(B, D)`` → ``(*lead, B)``."""
        logits = self.decoder(z)
        return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    def loss(self, x: Tensor, estimator, samples: int = 1, generator=None) -> Tensor:
        """Per-example ``−ELBO`` ``(B,)``, whose backward carries the estimator's gradient."""
        q_logits = self.encoder(x - self.pixel_mean)
        recon = expect(lambda z: self.neg_log_lik(z, x), q_logits, estimator, samples, generator)
        return recon + bernoulli_kl(q_logits, self.prior_logits)

    forward = loss  # so that DistributedDataParallel sees the forward pass

    @torch.no_grad()
    def iw_bound(self, x: Tensor, k: int = 100, generator=None) -> Tensor:
        """The ``k``-sample importance-weighted lower bound on ``log p(x)``, per example ``(B,)``."""
        q_logits = self.encoder(x - self.pixel_mean)
        z = bernoulli(torch.sigmoid(q_logits), (k,), generator)
        log_q = (z * F.logsigmoid(q_logits) + (1 - z) * F.logsigmoid(-q_logits)).sum(-1)
        log_prior = (z * F.logsigmoid(self.prior_logits) + (1 - z) * F.logsigmoid(-self.prior_logits)).sum(-1)
        log_w = -self.neg_log_lik(z, x) + log_prior - log_q
        return torch.logsumexp(log_w, 0) - math.log(k)


@dataclass
class VAEConfig:
    dataset: str = "mnist"
    model: str = "linear"
    estimator: str = "disarm"
    steps: int = 10000
    batch_size: int = 50
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    out: str = "runs/vae"
    resume: bool = False
    force_resume: bool = False   # resume even when the checkpoint's IDENTITY settings differ
    samples: int = 1
    latent: int = 200
    categories: int = 0          # 0: Bernoulli latents; K >= 2: `latent` categorical variables of K classes
    max_seconds: float = 0.0     # stop (checkpoint, evaluate) once this much training time has passed; 0: never
    log_every: int = 100
    checkpoint_every: int = 1000
    test_samples: int = 100
    test_examples: int = 0   # 0: the whole test set
    progress: bool = True


# the settings a resumed run must share with the run that wrote the checkpoint (--force-resume overrides)
IDENTITY = ("dataset", "model", "estimator", "seed", "lr", "batch_size", "samples", "latent", "categories")


class GradientVariance:
    """Moving moments of the encoder gradient: the variance reported by the VAE benchmark papers."""

    def __init__(self, decay: float = 0.999):
        self.decay, self.m1, self.m2, self.weight = decay, None, None, 0.0

    def update(self, params) -> float:
        g = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None]).double()
        if self.m1 is None:
            self.m1, self.m2 = torch.zeros_like(g), torch.zeros_like(g)
        self.m1.mul_(self.decay).add_((1 - self.decay) * g)
        self.m2.mul_(self.decay).add_((1 - self.decay) * g * g)
        self.weight = self.decay * self.weight + (1 - self.decay)
        return self.value()

    def value(self) -> float:
        if self.m1 is None:
            return float("nan")
        m1, m2 = self.m1 / self.weight, self.m2 / self.weight
        return (m2 - m1 * m1).mean().item()

    def state(self):
        return {"m1": self.m1, "m2": self.m2, "weight": self.weight}

    def load(self, s):
        self.m1, self.m2, self.weight = s["m1"], s["m2"], s["weight"]


def train_vae(cfg: VAEConfig) -> dict:
    """Trains (or resumes), evaluates the test bound, writes ``metrics.csv``, ``summary.json``, a plot."""
    from tqdm import tqdm

    if cfg.estimator not in REGISTRY or cfg.estimator == "exact":
        fail(f"unknown or unusable estimator {cfg.estimator!r} for the VAE; valid: "
             f"{', '.join(n for n in REGISTRY if n != 'exact')}")
    rank, world = distributed_from_env()
    if cfg.batch_size % world:
        fail(f"--batch-size {cfg.batch_size} must divide among {world} processes")
    main = rank == 0
    device = torch.device(cfg.device)
    train, test = datasets_or_fail(cfg.dataset)
    ckpt_path = prepare_out(cfg.out, cfg.resume, main)
    state = None
    if cfg.resume:
        try:
            state = load_checkpoint(ckpt_path, asdict(cfg), IDENTITY, cfg.force_resume)
        except CheckpointError as err:
            fail(str(err))

    torch.manual_seed(cfg.seed)
    x_train = train.images.to(device)
    if cfg.categories:
        from .vae_categorical import CategoricalVAE  # the categorical latent layer (issue 10)

        if "categorical" not in REGISTRY[cfg.estimator].distributions:
            fail(f"estimator {cfg.estimator!r} does not support categorical latents; valid: "
                 f"{', '.join(n for n, c in REGISTRY.items() if 'categorical' in c.distributions and n != 'exact')}")
        model = CategoricalVAE(train.dim, cfg.latent, cfg.categories, model=cfg.model,
                               pixel_mean=x_train.mean(0).cpu()).to(device)
    else:
        model = BernoulliVAE(train.dim, cfg.latent, cfg.model, pixel_mean=x_train.mean(0).cpu()).to(device)
    estimator = get_estimator(cfg.estimator).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    gvar = GradientVariance()
    step, seconds, window = 0, 0.0, []
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            estimator.load_state_dict(state["estimator"])
            opt.load_state_dict(state["optimizer"])
            for group in opt.param_groups:   # this command's lr (the same, unless --force-resume changed it)
                group["lr"] = cfg.lr
        except (RuntimeError, ValueError, KeyError) as err:
            fail(f"checkpoint {ckpt_path} does not fit this command's model and estimator "
                 f"({str(err).strip().splitlines()[0]}); it was left as it is")
        gen.set_state(state["generator"])
        gvar.load(state["gradient_variance"])
        step, seconds, window = state["step"], state["seconds"], list(state.get("log_window", []))
    net = model
    noise = gen
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model)
        noise = Sharded(gen, rank, world)   # every rank sees its slice of one process's noise
    local = cfg.batch_size // world
    metrics = Metrics(os.path.join(cfg.out, "metrics.csv"),
                      ["step", "train_elbo", "seconds", "encoder_grad_variance"],
                      resume_step=step if state is not None else None, enabled=main)

    saved = step if state is not None else None

    def stop(why: str):
        bar.close()
        kept = f"the last good checkpoint (step {saved}) is kept" if saved is not None else "no checkpoint was written"
        fail(f"{why}: training stopped; {kept}")

    def check_parameters():  # at log and checkpoint steps, not every step: one pass over the parameters
        bad = diverged(model)
        if bad is not None:
            stop(f"training diverged by step {step}: parameter {bad} (lower --lr)")

    def checkpoint():
        nonlocal saved
        check_parameters()
        if main:
            try:
                save_checkpoint({"step": step, "seconds": seconds, "model": model.state_dict(),
                                 "estimator": estimator.state_dict(), "optimizer": opt.state_dict(),
                                 "generator": gen.get_state(), "gradient_variance": gvar.state(),
                                 "log_window": list(window), "config": asdict(cfg)}, ckpt_path)
            except NonFiniteError as err:
                stop(f"at step {step} {err}")
            except CheckpointError as err:
                stop(str(err))
        saved = step

    bar = tqdm(total=cfg.steps, initial=step, desc=f"vae {cfg.estimator}", disable=not (cfg.progress and main))
    while step < cfg.steps and not (cfg.max_seconds and seconds >= cfg.max_seconds):
        t0 = time.perf_counter()
        idx = torch.randint(len(train), (cfg.batch_size,), generator=gen, device=device)[rank * local:(rank + 1) * local]
        x = D.binarize(x_train[idx], noise)
        try:
            mean_loss = net(x, estimator, cfg.samples, noise).mean()
        except ValueError:  # non-finite logits: say why, if the parameters diverged
            check_parameters()
            raise
        if not torch.isfinite(mean_loss):
            stop(f"the loss became {mean_loss.item()} at step {step + 1}")
        opt.zero_grad()
        mean_loss.backward()
        gv = gvar.update(model.encoder.parameters())
        opt.step()
        step += 1
        seconds += time.perf_counter() - t0
        window.append(all_mean(-mean_loss.item()))
        if step % cfg.log_every == 0 or step == cfg.steps:
            metrics.write(step=step, train_elbo=sum(window) / len(window), seconds=seconds, encoder_grad_variance=gv)
            bar.set_postfix(elbo=f"{sum(window) / len(window):.2f}")
            window = []
            check_parameters()
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint()
        bar.update()
    bar.close()
    if not main:
        return {}
    summary = evaluate(model, x_train, test, cfg, device, seconds, step)
    write_json(os.path.join(cfg.out, "summary.json"), summary)
    rows = metrics.read()
    plot_curves(os.path.join(cfg.out, "curves.png"), rows, "step", ["train_elbo", "encoder_grad_variance"],
                f"VAE {cfg.model} on {cfg.dataset}, {cfg.estimator}")
    return summary


@torch.no_grad()
def evaluate(model, x_train, test, cfg, device, seconds, step) -> dict:
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    x_test = test.images.to(device)
    if cfg.test_examples:
        x_test = x_test[: cfg.test_examples]
    bounds, train_bounds = [], []
    for chunk in x_test.split(500):
        bounds.append(model.iw_bound(D.binarize(chunk, gen), cfg.test_samples, gen))
    for chunk in x_train[: len(x_test)].split(500):
        train_bounds.append(model.iw_bound(D.binarize(chunk, gen), cfg.test_samples, gen))
    one = torch.cat([-model.loss(D.binarize(c, gen), "reinforce", 1, gen) for c in x_test.split(500)])
    return {"estimator": cfg.estimator, "model": cfg.model, "dataset": cfg.dataset, "steps": step,
            "latents": cfg.latent, "categories": cfg.categories,
            "train_seconds": seconds, f"test_elbo_{cfg.test_samples}_samples": torch.cat(bounds).mean().item(),
            f"train_elbo_{cfg.test_samples}_samples": torch.cat(train_bounds).mean().item(),
            "test_elbo_1_sample": one.mean().item()}
