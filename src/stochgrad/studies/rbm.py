"""``stochgrad train rbm``: a Bernoulli–Bernoulli RBM on binarised images by CD-k or PCD, its update the
reward correlation of seed §4.2 ([`stochgrad.boltzmann`][stochgrad.boltzmann]). At the end: the test log-likelihood
(exact when a layer has ≤ 20 units, else AIS) and a grid of model samples."""
from __future__ import annotations

import io
import os
import time
from dataclasses import asdict, dataclass

import torch

from .. import data as D
from ..boltzmann import RBM, ContrastiveDivergence, ais_log_partition
from ..files import write_atomic
from ..options import POSITIVE, choice, integer
from ..runinfo import write_json
from ..sampling import bernoulli
from .training import (DataRunConfig, Metrics, clock, counter, datasets_or_fail, nothing_to_do, open_run,
                       plot_curves, restoring, save_checkpoint, stop_if_diverged)


IDENTITY = ("dataset", "hidden", "method", "k", "batch_size", "lr", "seed")


@dataclass
class RBMConfig(DataRunConfig):
    """The RBM study's settings (and those of every trainer: [`RunConfig`][stochgrad.studies.training.RunConfig]),
    checked when built and when training starts ([`stochgrad.options`][stochgrad.options])."""

    OPTIONS = {"hidden": POSITIVE, "k": POSITIVE, "method": choice("cd", "pcd"), "ais_betas": integer(2),
               "ais_runs": integer(2)}
    STEPS = 5000
    out: str = "runs/rbm"
    batch_size: int = 100
    lr: float = 0.05
    hidden: int = 100
    method: str = "pcd"
    k: int = 1
    ais_betas: int = 2000
    ais_runs: int = 100


def sample_grid(path: str, images, shape, rows: int = 8) -> None:
    """The first ``rows × rows`` of ``images`` (flattened ``shape``) as one grey-scale grid image at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(len(images), rows * rows)
    h, w = shape
    grid = torch.ones(rows * (h + 1), rows * (w + 1))
    for i in range(n):
        r, c = divmod(i, rows)
        grid[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = images[i].reshape(h, w)
    buf = io.BytesIO()
    plt.imsave(buf, grid.numpy(), cmap="gray", vmin=0, vmax=1, format="png")
    write_atomic(path, buf.getvalue())


def train_rbm(cfg: RBMConfig) -> dict:
    """Trains an RBM by CD-k or PCD; reports the AIS log-likelihood."""
    from tqdm import tqdm

    cfg.validate()   # before anything is read or written: the same checks as the command line's
    train, test = datasets_or_fail(cfg.dataset)
    ckpt_path, state = open_run(cfg, IDENTITY)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    mean = train.images.mean(0).clamp(1e-3, 1 - 1e-3)
    rbm = RBM(train.dim, cfg.hidden, visible_bias=torch.logit(mean))
    cd = ContrastiveDivergence(rbm, cfg.k, persistent=cfg.method == "pcd", generator=gen)
    start, seconds = 0, 0.0
    if state is not None:   # exact: parameters, the persistent chains and the noise continue where they stopped
        with restoring(ckpt_path):
            rbm.load_state_dict(state["model"])
            chains = state["chains"]
            if chains is not None and tuple(chains.shape) != (cfg.batch_size, train.dim):
                raise ValueError(f"persistent chains of shape {tuple(chains.shape)}, this run's are "
                                 f"({cfg.batch_size}, {train.dim})")
            cd.state = chains
            gen.set_state(state["generator"])
            start, seconds = counter(state, "step"), clock(state)
        if start >= cfg.steps:
            done = nothing_to_do(cfg, state, f"step {start} of {cfg.steps}")
            if done is not None:
                return done
    metrics = Metrics(os.path.join(cfg.out, "metrics.csv"), ["step", "reconstruction_error", "seconds"],
                      resume_step=start if state is not None else None, tensorboard=cfg.tensorboard)
    window, saved = [], (start if state is not None else None)
    for step in tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"rbm {cfg.method}-{cfg.k}",
                     disable=not cfg.progress):
        t0 = time.perf_counter()
        idx = torch.randint(len(train), (cfg.batch_size,), generator=gen)
        v = D.binarize(train.images[idx], gen)
        cd.step(v, cfg.lr)
        seconds += time.perf_counter() - t0
        with torch.no_grad():
            window.append((rbm.visible_probs(rbm.hidden_probs(v)) - v).square().sum(-1).mean().item())
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            metrics.write(step=step + 1, reconstruction_error=sum(window) / len(window), seconds=seconds)
            window = []
            stop_if_diverged(rbm, step + 1, saved)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            save_checkpoint({"step": step + 1, "seconds": seconds, "model": rbm.state_dict(), "chains": cd.state,
                             "generator": gen.get_state(), "config": asdict(cfg)}, ckpt_path)
            saved = step + 1
    steps = max(start, cfg.steps)
    with torch.no_grad():
        v_test = D.binarize(test.images, gen)
        if min(rbm.W.shape) <= 20:
            log_z, how = rbm.log_partition().item(), "exact"
        else:
            with tqdm(total=cfg.ais_betas - 1, desc="rbm: log Z by AIS", disable=not cfg.progress) as bar:
                log_z, _ = ais_log_partition(rbm, cfg.ais_betas, cfg.ais_runs, gen, progress=bar.update)
            how = f"AIS ({cfg.ais_betas} temperatures, {cfg.ais_runs} runs)"
        ll = (-rbm.free_energy(v_test)).mean().item() - log_z
        chains = bernoulli(torch.full((64, train.dim), 0.5), (), gen)
        v, h = rbm.gibbs(chains, 1000, gen)
        sample_grid(os.path.join(cfg.out, "samples.png"), rbm.visible_probs(h), train.shape)
    summary = {"dataset": cfg.dataset, "method": f"{cfg.method}-{cfg.k}", "hidden": cfg.hidden, "steps": steps,
               "test_log_likelihood": ll, "log_partition": log_z, "log_partition_method": how, "train_seconds": seconds}
    write_json(os.path.join(cfg.out, "summary.json"), summary)
    plot_curves(os.path.join(cfg.out, "curves.png"), metrics.read(), "step", ["reconstruction_error"],
                f"RBM {cfg.method}-{cfg.k} on {cfg.dataset}")
    return summary
