"""``stochgrad train bandit``: the 6-bit multiplexer as a contextual bandit, learned by a network of
stochastic binary neurons from a broadcast reward alone (``local=True``: no back-propagation), with the
reward delivered ``k`` steps after the decisions ([`stochgrad.DelayedBroadcast`][stochgrad.graph.DelayedBroadcast]).

Context: 2 address bits and 4 data bits; action: one stochastic binary output; reward 1 when the
action equals the addressed data bit, else 0 (the optimal policy earns 1). Network
``6 → hidden stochastic binary → 1 stochastic binary``; every layer's estimator is the same
(``reinforce`` or ``reinforce_optimal``), its loss ``−reward``.
"""
from __future__ import annotations

import math
import os
import time
from collections import deque
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..graph import DelayedBroadcast
from ..neurons import StochasticBinary
from ..options import NON_NEGATIVE, POSITIVE, OptionError, choice
from ..runinfo import write_json
from .training import (Metrics, RunConfig, clock, counter, nothing_to_do, open_run, plot_curves, restoring,
                       save_checkpoint, stop_if_diverged)

ESTIMATORS = ("reinforce", "reinforce_ma", "reinforce_optimal")
IDENTITY = ("estimator", "delay", "batch_size", "hidden", "lr", "seed")


def multiplexer(batch: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Contexts ``(batch, 6)`` in {0, 1} and the correct actions ``(batch,)``: data bit ``2·a0 + a1``."""
    x = (torch.rand(batch, 6, generator=generator) < 0.5).float()
    address = (2 * x[:, 0] + x[:, 1]).long()
    return x, x[:, 2:].gather(1, address.unsqueeze(1)).squeeze(1)


@dataclass
class BanditConfig(RunConfig):
    """The bandit study's settings (and those of every trainer: [`RunConfig`][stochgrad.studies.training.RunConfig]),
    checked when built and when training starts ([`stochgrad.options`][stochgrad.options])."""

    OPTIONS = {"estimator": choice(*ESTIMATORS, words="one of the estimators that learn from the reward alone"),
               "delay": NON_NEGATIVE, "hidden": POSITIVE}
    STEPS = 4000
    out: str = "runs/bandit"
    batch_size: int = 64
    lr: float = 1.0
    estimator: str = "reinforce_optimal"
    delay: int = 0
    hidden: int = 32

    def check(self) -> None:
        """``resume`` only without a delay."""
        if self.resume and self.delay > 0:
            raise OptionError("resume", "works with --delay 0 only: the decisions still awaiting their reward hold "
                                        "autograd graphs, which a checkpoint cannot carry")


def train_bandit(cfg: BanditConfig) -> dict:
    """Trains the multiplexer from the (delayed) broadcast reward; writes metrics and a summary to ``cfg.out``."""
    from tqdm import tqdm

    cfg.validate()   # before anything is read or written: the same checks as the command line's
    ckpt_path, state = open_run(cfg, IDENTITY)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    policy = nn.Sequential(nn.Linear(6, cfg.hidden), StochasticBinary(cfg.estimator, generator=gen),
                           nn.Linear(cfg.hidden, 1), StochasticBinary(cfg.estimator, generator=gen))
    opt = torch.optim.SGD(policy.parameters(), lr=cfg.lr)
    delayed = DelayedBroadcast(cfg.delay, local=True)
    in_flight: deque = deque()   # (step handle, reward) of the environment, released k steps late
    start, seconds, held = 0, 0.0, 0
    if state is not None:   # delay 0: nothing is in flight between steps, so the resume is exact
        with restoring(ckpt_path):
            policy.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            start, seconds, held = counter(state, "step"), clock(state), counter(state, "held")
        if start >= cfg.steps:
            done = nothing_to_do(cfg, state, f"step {start} of {cfg.steps}")
            if done is not None:
                return done
    saved = start if state is not None else None
    metrics = Metrics(os.path.join(cfg.out, "metrics.csv"), ["step", "reward", "held_steps", "seconds"],
                      resume_step=start if state is not None else None, tensorboard=cfg.tensorboard)
    window = []
    for step in tqdm(range(start, cfg.steps), initial=start, total=cfg.steps,
                     desc=f"bandit {cfg.estimator} k={cfg.delay}", disable=not cfg.progress):
        t0 = time.perf_counter()
        x, correct = multiplexer(cfg.batch_size, gen)
        try:
            with delayed.step() as handle:
                action = policy(x).squeeze(-1)
        except ValueError:   # non-finite logits: say why, if the parameters diverged
            stop_if_diverged(policy, step + 1, saved)
            raise
        reward = (action == correct).float()
        in_flight.append((handle, reward))
        held = max(held, len(delayed))
        if len(in_flight) > cfg.delay:           # the reward of the step taken k steps ago arrives
            opt.zero_grad()
            past, past_reward = in_flight.popleft()
            delayed.deliver(-past_reward, past)
            opt.step()
        seconds += time.perf_counter() - t0
        window.append(reward.mean().item())
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            metrics.write(step=step + 1, reward=sum(window) / len(window), held_steps=held, seconds=seconds)
            window = []
            stop_if_diverged(policy, step + 1, saved)
        if cfg.delay == 0 and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            save_checkpoint({"step": step + 1, "seconds": seconds, "held": held, "model": policy.state_dict(),
                             "optimizer": opt.state_dict(), "generator": gen.get_state(), "config": asdict(cfg)},
                            ckpt_path)
            saved = step + 1
    delayed.discard()   # the last k steps' rewards arrive after the run
    in_flight.clear()
    policy.eval()
    x, correct = multiplexer(4096, gen)
    with torch.no_grad():
        greedy = (policy(x).squeeze(-1) == correct).float().mean().item()
    rows = metrics.read()
    summary = {"estimator": cfg.estimator, "delay": cfg.delay, "steps": max(start, cfg.steps),
               "final_reward": rows[-1]["reward"] if rows else math.nan, "greedy_reward": greedy, "optimal_reward": 1.0,
               "max_held_steps": held, "train_seconds": seconds}
    write_json(os.path.join(cfg.out, "summary.json"), summary)
    plot_curves(os.path.join(cfg.out, "curves.png"), rows, "step", ["reward"],
                f"multiplexer, {cfg.estimator}, reward delayed {cfg.delay} steps")
    return summary
