"""``stochgrad train hashing``: semantic hashing (Salakhutdinov & Hinton 2009; seed §1.1) with a code layer
of stochastic binary neurons trained by any layer estimator, evaluated by retrieval against sign-of-PCA
and random-projection codes of the same length.

Autoencoder ``x → 256 ReLU → bits → [StochasticBinary] → 256 ReLU → x`` (Bernoulli reconstruction).
Codes at test time: ``1[σ(a) > ½]``. Retrieval: test images query the training set by Hamming
distance; precision within Hamming radius 2 (a query that retrieves nothing scores 0) and mean
average precision over the full ranking (relevant = same label).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graph import broadcast
from ..neurons import StochasticBinary
from ..estimators import REGISTRY
from ..options import POSITIVE, choice
from ..runinfo import write_json
from .training import (DataRunConfig, Metrics, clock, counter, datasets_or_fail, fail, nothing_to_do, open_run,
                       plot_curves, restoring, save_checkpoint, stop_if_diverged, stop_training)


IDENTITY = ("dataset", "estimator", "bits", "batch_size", "lr", "seed")


class HashingAutoencoder(nn.Module):
    """An autoencoder whose code layer is a stochastic binary layer: its codes are the hash."""

    def __init__(self, x_dim: int, bits: int, estimator: str, hidden: int = 256, generator=None):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, bits))
        self.code = StochasticBinary(estimator, generator=generator)
        self.decoder = nn.Sequential(nn.Linear(bits, hidden), nn.ReLU(), nn.Linear(hidden, x_dim))

    def forward(self, x: Tensor) -> Tensor:
        """Per-example reconstruction loss ``(B,)``."""
        logits = self.decoder(self.code(self.encoder(x)))
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)

    @torch.no_grad()
    def codes(self, x: Tensor) -> Tensor:
        return (self.encoder(x) > 0).float()   # σ(a) > ½


def hamming(queries: Tensor, database: Tensor) -> Tensor:
    """``(Q, N)`` Hamming distances between binary codes ``(Q, bits)`` and ``(N, bits)``."""
    agree = queries @ database.T + (1 - queries) @ (1 - database).T
    return queries.shape[-1] - agree


def retrieval(queries: Tensor, q_labels: Tensor, database: Tensor, db_labels: Tensor, radius: int = 2) -> dict:
    """Precision within Hamming ``radius`` (0 for empty retrievals) and mean average precision."""
    d = hamming(queries, database)
    relevant = (q_labels.unsqueeze(1) == db_labels.unsqueeze(0)).float()
    within = (d <= radius).float()
    hits = within.sum(1)
    precision = torch.where(hits > 0, (within * relevant).sum(1) / hits.clamp_min(1), torch.zeros_like(hits))
    order = torch.argsort(d + 1e-6 * torch.arange(d.shape[1], device=d.device), dim=1)  # ties: database order
    rel = torch.gather(relevant, 1, order)
    prec_at = rel.cumsum(1) / torch.arange(1, rel.shape[1] + 1, device=rel.device)
    ap = (prec_at * rel).sum(1) / rel.sum(1).clamp_min(1)
    return {"precision_at_radius_2": precision.mean().item(), "queries_with_results": (hits > 0).float().mean().item(),
            "mean_average_precision": ap.mean().item()}


def baseline_codes(train_x: Tensor, x: Tensor, bits: int, kind: str, generator=None) -> Tensor:
    """Sign of the top-``bits`` principal components (``pca``) or of Gaussian random projections (``random``)."""
    mean = train_x.mean(0)
    if kind == "pca":
        _, _, V = torch.linalg.svd(train_x - mean, full_matrices=False)
        proj = V[:bits].T
    else:
        proj = torch.randn(train_x.shape[1], bits, generator=generator)
    return ((x - mean) @ proj > 0).float()


@dataclass
class HashingConfig(DataRunConfig):
    """The hashing study's settings (and those of every trainer: [`RunConfig`][stochgrad.studies.training.RunConfig]),
    checked when built and when training starts ([`stochgrad.options`][stochgrad.options]); whether the estimator works as a
    layer is the layer's to say."""

    OPTIONS = {"estimator": choice(*REGISTRY, words="a registered estimator"), "bits": POSITIVE, "queries": POSITIVE, "database": POSITIVE}
    STEPS = 5000
    out: str = "runs/hashing"
    batch_size: int = 100
    lr: float = 1e-3
    estimator: str = "straight_through"
    bits: int = 32
    queries: int = 1000
    database: int = 10000


def train_hashing(cfg: HashingConfig) -> dict:
    """Trains the codes; reports retrieval against PCA and random projections."""
    from tqdm import tqdm

    cfg.validate()   # before anything is read or written: the same checks as the command line's
    train, test = datasets_or_fail(cfg.dataset)
    ckpt_path, state = open_run(cfg, IDENTITY)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    try:
        model = HashingAutoencoder(train.dim, cfg.bits, cfg.estimator, generator=gen)
    except ValueError as err:
        fail(str(err))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start, seconds = 0, 0.0
    if state is not None:   # the estimator's state (baselines) is part of the model's
        with restoring(ckpt_path):
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            start, seconds = counter(state, "step"), clock(state)
        if start >= cfg.steps:
            done = nothing_to_do(cfg, state, f"step {start} of {cfg.steps}")
            if done is not None:
                return done
    metrics = Metrics(os.path.join(cfg.out, "metrics.csv"), ["step", "reconstruction_loss", "seconds"],
                      resume_step=start if state is not None else None, tensorboard=cfg.tensorboard)
    window, saved = [], (start if state is not None else None)
    for step in tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"hashing {cfg.estimator}",
                     disable=not cfg.progress):
        t0 = time.perf_counter()
        x = train.images[torch.randint(len(train), (cfg.batch_size,), generator=gen)]
        opt.zero_grad()
        try:
            with broadcast() as graph:
                loss = model(x)
            graph.backward(loss)
        except ValueError:   # non-finite logits: say why, if the parameters diverged
            stop_if_diverged(model, step + 1, saved)
            raise
        opt.step()
        seconds += time.perf_counter() - t0
        window.append(loss.mean().item())
        if not math.isfinite(window[-1]):
            stop_training(f"the loss became {window[-1]} at step {step + 1}", saved)
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            metrics.write(step=step + 1, reconstruction_loss=sum(window) / len(window), seconds=seconds)
            window = []
            stop_if_diverged(model, step + 1, saved)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            save_checkpoint({"step": step + 1, "seconds": seconds, "model": model.state_dict(),
                             "optimizer": opt.state_dict(), "generator": gen.get_state(), "config": asdict(cfg)},
                            ckpt_path)
            saved = step + 1
    model.eval()
    db_x, db_y = train.images[: cfg.database], train.labels[: cfg.database]
    q_x, q_y = test.images[: cfg.queries], test.labels[: cfg.queries]
    results = {"learned": retrieval(model.codes(q_x), q_y, model.codes(db_x), db_y)}
    for kind in ("pca", "random"):
        results[f"{kind}_sign"] = retrieval(baseline_codes(train.images, q_x, cfg.bits, kind, gen), q_y,
                                            baseline_codes(train.images, db_x, cfg.bits, kind, gen), db_y)
    summary = {"dataset": cfg.dataset, "estimator": cfg.estimator, "bits": cfg.bits, "steps": max(start, cfg.steps),
               "train_seconds": seconds, "retrieval": results}
    write_json(os.path.join(cfg.out, "summary.json"), summary)
    plot_curves(os.path.join(cfg.out, "curves.png"), metrics.read(), "step", ["reconstruction_loss"],
                f"semantic hashing, {cfg.bits} bits, {cfg.estimator}")
    return summary
