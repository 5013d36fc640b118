"""``auto``: one site's estimator, chosen among candidates by their measured efficiency on the user's own f.

Which estimator is best depends on ``f`` and on where the logits are, and both move in training. ``Auto``
holds the candidate estimators (by default every registered unbiased one that supports the site's
distribution and fits its budget, [`plan`][stochgrad.estimators.auto.plan]) and, on *measuring calls*, runs them all on the same ``f``
and logits (each with its own noise). For each candidate ``c`` it tracks, as moving averages over measuring
calls (``decay``), the second moment ``M_c = mean_examples ‖ĝ_c‖²`` and ``‖∇‖²`` (below), so its variance is
``V_c = M_c − ‖∇‖²``. It uses the candidate with the least **variance × cost**:

- ``cost="time"`` (default): the seconds a training step takes with ``c``, ``s_c = t_c + r``: ``t_c`` the
  candidate's own call (its estimate and its backward pass to the logits) and ``r`` the rest of the step (the
  time between two calls of this site), each the median over the ``warmup`` calls, measured there and then
  frozen. ``V_c·s_c`` is the variance left after a fixed budget of seconds: what decides which estimator
  reaches the better objective in the time one has. The times are state (``state_dict``) and are in
  [`report`][stochgrad.estimators.auto.Auto.report]: a resumed run repeats its choices exactly; a second run on another machine measures its own.
  Timing: the process's CPU time on the CPU (what other processes on a shared machine cannot inflate); on a
  GPU the wall clock after a synchronisation, on warm-up calls only.
- ``cost="evaluations"``: f-evaluations per example, ``e_c`` (the variance after a fixed number of
  evaluations): machine-independent, so the choice repeats exactly everywhere.

- Unbiased at every step: a call's gradient is the estimate of the candidate chosen *before* the call
  (from past calls only); on a measuring call too, the others' estimates only feed the statistics.
- Measured precisely: on a measuring call every candidate runs on *common random numbers* (one
  generator seeded by a draw from the caller's, so candidates drawing alike see the same samples and
  their differences carry little noise), and ``‖∇‖²`` is estimated by the returned estimate times the
  chosen candidate's rerun on the common numbers (independent, so unbiased).
- Budget: ``samples`` of the first call fixes the f-evaluations per example an ordinary call may
  spend; each candidate runs with the most samples that fit (``disarm``: 1 pair for a budget of 2).
- Cheap to measure at any size: the default candidates leave out RODEO, whose surrogate network is
  evaluated at every unit's neighbour of every sample (``K(n + 1)`` network evaluations per example): at
  1,024 units a warm-up call with it took 150× the chosen estimator's call. Name it in ``candidates`` to
  have it considered.
- Cost of measuring, bounded: calls ``0 … warmup−1`` measure, and after them one call in
  [`interval`][stochgrad.estimators.auto.Auto.interval] (counted from the last measuring call): at least ``every``,
  and as large as keeps measuring at most ``overhead`` (default 5 %) of the run's cost. A measuring call runs every candidate again (the chosen one too, on
  the common numbers), so it costs ``Σ_c t_c`` more than an ordinary step of ``s_k`` seconds (``cost="time"``;
  f-evaluations ``Σ_c e_c`` and ``e_k`` otherwise): the interval is ``max(every, ⌈Σ_c t_c / (overhead · s_k)⌉)``,
  set anew after each measuring call (the next call that measures is in the saved state: measuring on the multiples
  of an interval that changes with the choice would measure more often than it says where the choice alternates,
  as between DisARM and ARMS some 300 times in a linear VAE's 300 s). On the 20 × 10 categorical VAE,
  where CARMS, REBAR and RELAX make a measuring call 4× a step, a fixed interval of 50 cost about 9 % of the steps.
  [`measuring_fraction`][stochgrad.estimators.auto.Auto.measuring_fraction] reports the share of f-evaluations
  spent.
- No host-device synchronisation on ordinary calls: the counters, the choice and the frozen times are
  Python numbers beside the buffers (written into them when the state is saved, read back when it is
  loaded); only measuring calls read statistics back to choose.
- Ranks: statistics and times are averaged over ranks under ``torch.distributed`` before the choice is
  taken, so all ranks switch together (each rank must make the same calls).
- The network view (``StochasticBinary("auto")``): one sample per example, so the candidates are the
  score-function estimators with a budget of 1 (``reinforce``, ``reinforce_ma``, ``reinforce_optimal``),
  compared on the same broadcast ``(h, L)``: equal costs, so by their second moment (= variance + the
  same ``‖∇‖²`` for every unbiased candidate).

[`report`][stochgrad.estimators.auto.Auto.report] says what was chosen and why; ``extra_repr`` prints it.
"""
from __future__ import annotations

import math
import statistics
import time

import torch
from torch import Tensor, nn

from ..distributed import mean_over_ranks
from ..distributions import BERNOULLI, get_distribution
from ..options import DECAY, NON_NEGATIVE, POSITIVE, SHARE, choice, suggestion
from ..sampling import Sharded
from .base import REGISTRY, Estimator

# Left out of the default candidates: enumeration, auto itself, and ARM, which DisARM dominates at the same
# cost (DisARM is ARM Rao-Blackwellised over u given the pair; Dong et al. 2020).
_NEVER = ("exact", "auto", "arm")
# Left out of the default candidates (they may be named): costly to measure at many units (module docstring).
_COSTLY = ("rodeo",)
COSTS = ("time", "evaluations")


def clock(like: Tensor) -> float:
    """Seconds, for timing the work on ``like``'s device: the process's CPU time on the CPU; elsewhere the
    wall clock once the device has finished its queued work."""
    if like.device.type == "cpu":
        return time.process_time()
    torch.accelerator.synchronize(like.device)
    return time.perf_counter()


def _common_numbers(generator, like: Tensor):
    """A factory of generators that all repeat one stream, seeded by one draw from ``generator`` (or the global
    generator): every candidate sees the same noise, and the caller's stream moves on independently of it."""
    base = generator.generator if isinstance(generator, Sharded) else generator
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=base, device=base.device if base is not None else "cpu"))

    def fresh():
        g = torch.Generator(device=like.device).manual_seed(seed)
        return Sharded(g, generator.rank, generator.world) if isinstance(generator, Sharded) else g

    return fresh


def check_candidates(names) -> None:
    """Each name registered, unbiased and not ``auto``: checked when ``auto`` is built, not at its first call."""
    for name in names:
        if not isinstance(name, str) or name not in REGISTRY or name == "auto":
            raise ValueError(f"auto: unknown or unusable candidate {name!r}{suggestion(name, REGISTRY)}; known: "
                             f"{', '.join(k for k in REGISTRY if k != 'auto')}")
        if not REGISTRY[name].unbiased:
            raise ValueError(f"auto: candidate {name!r} is biased; auto chooses among unbiased estimators")


def plan(budget: int, n: int, names=None, distribution=BERNOULLI) -> list[tuple[Estimator, int]]:
    """Fresh candidates for a budget of ``budget`` f-evaluations per example: ``(estimator, samples)`` each.

    ``names``: registered unbiased estimators (default: all that support ``distribution`` but those in
    ``_NEVER`` and ``_COSTLY``); those that cannot fit the budget are left out. Each gets the most samples whose
    cost fits.
    """
    dist = get_distribution(distribution)
    if names is None:
        names = [k for k, cls in REGISTRY.items() if cls.unbiased and k not in _NEVER + _COSTLY
                 and dist.name in cls.distributions]
    check_candidates(names)
    out = []
    for name in names:
        if dist.name not in REGISTRY[name].distributions:
            raise ValueError(f"auto: candidate {name!r} does not support {dist.name} units")
        est = REGISTRY[name]()
        fits = [s for s in range(budget, est.min_samples - 1, -1) if est.evaluations(n, s) <= budget]
        if fits:
            out.append((est, fits[0]))
    if not out:
        raise ValueError(f"auto: no candidate among {list(names)} fits samples={budget} (its budget of "
                         "f-evaluations per example)")
    return out


class Auto(Estimator):
    """``auto``: per site, the unbiased candidate with the least measured variance × cost (seconds per step by
    default, or f-evaluations) on the user's own ``f``, re-measured at intervals of at least ``every`` calls (module docstring).
    Unbiased at every step; Bernoulli and categorical units; [`report`][stochgrad.estimators.auto.Auto.report] says what was chosen and why.

    Args:
        candidates: estimator names (default: every registered unbiased one that supports the units and fits the
            budget, but RODEO).
        every: the fewest calls from one measuring call to the next ([`interval`][stochgrad.estimators.auto.Auto.interval]).
        warmup: the first calls, all measuring; with ``cost="time"`` the candidates are timed on them.
        decay: of the moving statistics.
        cost: ``"time"`` (seconds per step, measured on the warm-up calls and frozen) or ``"evaluations"``
            (f-evaluations per example: machine-independent).
        overhead: the largest share of the run's cost (seconds, or f-evaluations) that measuring may take after the
            warm-up: the measuring calls are spaced out further than ``every`` where the candidates cost more.
    """

    name = "auto"
    description = ("chooses per site the unbiased estimator with least measured variance x seconds per step (or "
                   "x f-evaluations) on the user's f; re-measured at intervals of at least `every` calls")
    unbiased = True
    broadcast = True
    distributions = ("bernoulli", "categorical")
    cost = "S+meas."

    records = ("timings",)   # the warm-up calls' seconds (−1 where a part was not timed), not a statistic

    def __init__(self, candidates: list[str] | tuple[str, ...] | None = None, every: int = 50, warmup: int = 10,
                 decay: float = 0.5, cost: str = "time", overhead: float = 0.05):
        super().__init__()
        POSITIVE.check(every, "every")
        NON_NEGATIVE.check(warmup, "warmup")
        decay = DECAY.check(decay, "decay")
        if candidates is not None and (isinstance(candidates, str) or len(candidates) < 1):
            raise ValueError(f"candidates must be a list of registered names, got {candidates!r}")
        if candidates is not None:
            check_candidates(candidates)
        choice(*COSTS).check(cost, "cost")
        SHARE.check(overhead, "overhead")
        if cost == "time" and warmup < 1:
            raise ValueError("cost='time' times the candidates on the warm-up calls: warmup must be >= 1 "
                             "(or use cost='evaluations')")
        self.names = None if candidates is None else tuple(candidates)
        self.every, self.warmup, self.decay, self.cost_model = every, warmup, decay, cost
        self.overhead = float(overhead)
        self.candidates = nn.ModuleList()
        self.sizes: list[int] = []          # samples per call of each candidate
        self.costs: list[int] = []          # f-evaluations per example of each candidate
        for name, value in (("budget", 0), ("units", 0), ("calls", 0), ("choice", 0)):
            self.register_buffer(name, torch.tensor(value, dtype=torch.int64))
        self.register_buffer("second_moment", torch.zeros(0))   # (C,) moving mean of mean ‖ĝ_c‖²
        self.register_buffer("squared_norm", torch.zeros(()))   # moving mean of the estimate of ‖∇‖²
        self.register_buffer("weight", torch.zeros(()))         # 1 − decay^measurements: bias correction
        self.register_buffer("spent", torch.zeros(2, dtype=torch.float64))  # f-evals per example: all, measuring extra
        self.register_buffer("timings", torch.zeros(0, dtype=torch.float64))  # (warmup, C + 1): seconds per warm-up
        # call of each candidate, then the rest of the step (−1: not measured; a checkpoint holds no NaN)
        # the host's copies (the buffers are written from them when the state is saved): no device read per call
        self._budget = self._units = self._calls = self._choice = 0
        self._spent = [0.0, 0.0]
        self._timings: list[list[float]] = []
        self._dist = BERNOULLI
        self._last_end: float | None = None   # the clock at the end of the last timed call
        self._next: int | None = warmup   # the next call that measures after the warm-up (extra state)
        self.history: list[tuple[int, str]] = []   # (call, candidate) at every switch

    # ---- building -------------------------------------------------------------------------------
    def _build(self, budget: int, n: int, dist, like: Tensor | None = None) -> None:
        chosen = plan(budget, n, self.names, dist)
        self.candidates = nn.ModuleList(est for est, _ in chosen)
        self.sizes = [s for _, s in chosen]
        self.costs = [c.evaluations(n, s) for c, s in zip(self.candidates, self.sizes)]
        self._budget, self._units, self._dist = budget, n, dist
        dtype = torch.float64 if like is None else like.dtype
        device = self.budget.device if like is None else like.device
        self.second_moment = torch.zeros(len(chosen), dtype=dtype, device=device)
        self.squared_norm = self.squared_norm.to(dtype=dtype, device=device)
        self.weight = self.weight.to(dtype=dtype, device=device)
        rows = self.warmup if self.cost_model == "time" else 0
        self.timings = torch.full((rows, len(chosen) + 1), -1.0, dtype=torch.float64, device=device)
        self._timings = []
        if like is not None:
            self.candidates.to(device)
        self.history = [(0, self._label(0))]
        self._next = self.warmup

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        """The host's counters, choice, spending and times into their buffers, then the usual."""
        if self.sizes:
            self.budget.fill_(self._budget)
            self.units.fill_(self._units)
            self.calls.fill_(self._calls)
            self.choice.fill_(self._choice)
            self.spent.copy_(torch.tensor(self._spent, dtype=torch.float64))
            if self._timings:
                self.timings[:len(self._timings)] = torch.tensor(self._timings, dtype=torch.float64)
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        self.check_state(state_dict, prefix)   # before anything here changes
        budget, units = state_dict.get(prefix + "budget"), state_dict.get(prefix + "units")
        extra = state_dict.get(prefix + "_extra_state") or {}
        if budget is not None and int(budget) > 0 and not self.sizes:
            dist = get_distribution(extra.get("distribution", "bernoulli"))
            self._build(int(budget), int(units), dist, state_dict[prefix + "second_moment"])
        for name in ("second_moment", "squared_norm", "weight", "timings"):
            incoming = state_dict.get(prefix + name)
            buf = getattr(self, name)
            if incoming is not None and (incoming.shape, incoming.dtype) != (buf.shape, buf.dtype):
                setattr(self, name, torch.zeros_like(incoming, device=buf.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._budget, self._units = int(self.budget), int(self.units)
        self._calls, self._choice = int(self.calls), int(self.choice)
        self._spent = self.spent.tolist()
        rows = self.timings[:min(self._calls, self.warmup)].tolist() if self.timings.numel() else []
        self._timings = [row for row in rows if any(v >= 0 for v in row)]   # the calls timed (not the network view's)
        self._last_end = None
        if self._next is None:   # a state saved before the schedule was kept: the call measuring would have chosen
            self._next = -(-self._calls // self.interval()) * self.interval()

    def state_meaning(self) -> dict:
        # the candidates, in order: the choice is an index into them (a state saved with [a, b] never loads into
        # auto([b, a]), where it would name the other estimator)
        names = [c.name for c in self.candidates] or (list(self.names) if self.names else [])
        return {**super().state_meaning(), **({"candidates": names} if names else {})}

    def get_extra_state(self):
        return {**self.state_meaning(), "history": list(self.history), "distribution": self._dist.name,
                "next_measure": self._next}

    def set_extra_state(self, state):
        self.history = list(state.get("history", [])) if state else []
        self._next = state.get("next_measure") if state else None

    def _ready(self, samples: int, n: int, dist, like: Tensor) -> None:
        if not self.sizes:
            self._build(samples, n, dist, like)
        elif samples != self._budget or n != self._units or dist is not self._dist:
            raise ValueError(f"auto was set up for samples={self._budget} (its budget of f-evaluations per example), "
                             f"{self._units} units of {self._dist.name}, got samples={samples} and {n} units of "
                             f"{dist.name}: keep one auto object per stochastic site and one budget")

    def _measuring(self, t: int) -> bool:
        return t < self.warmup or t >= self._next

    def interval(self) -> int:
        """Calls from one measuring call to the next after the warm-up: ``max(every, ⌈Σ_c t_c / (overhead · s_k)⌉)``,
        ``t_c`` each candidate's call and ``s_k`` a step with the chosen one, in seconds (``cost="time"``, once timed)
        or f-evaluations per example. A function of the state (the frozen times, the choice): a resumed run measures
        on the same calls."""
        if not self.sizes:
            return self.every
        if self.cost_model == "time" and self._timings:
            own = self._own_seconds()
            extra, step = sum(own[:-1]), own[self._choice] + own[-1]
        else:
            extra, step = sum(self.costs), self.costs[self._choice]
        return max(self.every, math.ceil(extra / (self.overhead * step))) if step > 0 else self.every

    def _label(self, i: int) -> str:
        return f"{self.candidates[i].name}(samples={self.sizes[i]})"

    def evaluations(self, n, samples=1):
        """f-evaluations per example of an ordinary call: the chosen candidate's. A measuring call adds those of
        every candidate; [`report`][stochgrad.estimators.auto.Auto.report] counts both (``evaluations_spent``), [`measuring_fraction`][stochgrad.estimators.auto.Auto.measuring_fraction] says what share
        measuring took."""
        if not self.sizes:
            est, s = plan(samples, n, self.names)[0]
            return est.evaluations(n, s)
        return self.costs[self._choice]

    # ---- the functional view ----------------------------------------------------------------------
    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        n = logits.shape[-dist.event_dims]
        self._ready(samples, n, dist, logits)
        k = self._choice

        def run(cand, a, s, g):
            return cand.estimate(f, a, s, g, dist)

        if not (logits.requires_grad and self.training):
            return run(self.candidates[k], logits, self.sizes[k], generator)
        t = self._calls
        timing = self.cost_model == "time" and t < self.warmup
        if timing:   # the rest of the step: from the end of the last (timed) call to the start of this one
            start = clock(logits)
            rest = start - self._last_end if self._last_end is not None else -1.0   # −1: not measured
        self._count(t)
        value = run(self.candidates[k], logits, self.sizes[k], generator)   # the step's gradient: choice from the past
        if not self._measuring(t):
            return value
        # Measuring: every candidate on common random numbers (a generator seeded from the caller's), so that
        # their differences are measured precisely; ‖∇‖² from the returned estimate × the chosen one's rerun.
        (returned,) = torch.autograd.grad(value.sum(), logits, retain_graph=True)
        grads, seconds = [], []
        common = _common_numbers(generator, logits)
        for cand, s in zip(self.candidates, self.sizes):
            a = logits.detach().requires_grad_(True)
            t0 = clock(logits) if timing else 0.0
            with torch.enable_grad():
                v = run(cand, a, s, common())
                (g,) = torch.autograd.grad(v.sum(), a, allow_unused=True)
            grads.append(torch.zeros_like(a) if g is None else g.detach())
            if timing:
                seconds.append(clock(logits) - t0)
        G = torch.stack(grads).reshape(len(grads), -1, math.prod(logits.shape[-dist.event_dims:]))  # (C, examples, units)
        norm = (returned.detach().reshape(G.shape[1:]) * G[k]).sum(-1)   # independent: E = ‖∇‖²
        self._measure(G.square().sum(-1).mean(-1), norm.mean(), G.shape[1], t, [*seconds, rest] if timing else None)
        if timing:
            self._last_end = clock(logits)
        return value

    # ---- the network view -------------------------------------------------------------------------
    def score_gradient(self, h, probs, losses, update=True, dl_dh=None):
        self._ready(h.shape[0] if h.dim() > probs.dim() else 1, h.shape[-1], BERNOULLI, probs)   # one sample: no lead
        bad = [c.name for c in self.candidates if not c.broadcast]
        if bad:
            raise ValueError(f"auto as a layer needs candidates that take the broadcast loss; {bad} do not")
        k = self._choice
        if not update:
            return self.candidates[k].score_gradient(h, probs, losses, update, dl_dh)
        t = self._calls
        self._count(t)
        if not self._measuring(t):
            return self.candidates[k].score_gradient(h, probs, losses, update, dl_dh)
        grads = [c.score_gradient(h, probs, losses, True, dl_dh) for c in self.candidates]
        G = torch.stack(grads).reshape(len(grads), -1, h.shape[-1])
        # one shared sample: no independent pair to estimate ‖∇‖², and equal costs: compare second moments
        self._measure(G.square().sum(-1).mean(-1), torch.zeros((), dtype=G.dtype, device=G.device), G.shape[1], t)
        return grads[k]

    # ---- statistics and the choice ----------------------------------------------------------------
    def _count(self, t: int) -> None:
        """Counts the call on the host (Python numbers only: nothing is written to a device)."""
        self._calls = t + 1
        extra = sum(self.costs) if self._measuring(t) else 0
        self._spent[0] += self.costs[self._choice] + extra
        self._spent[1] += extra

    @torch.no_grad()
    def _measure(self, second: Tensor, cross: Tensor, examples: int, t: int, seconds: list[float] | None = None) -> None:
        C = len(self.sizes)
        parts = [second, cross.reshape(1)]
        if seconds is not None:   # averaged over ranks with the statistics, so that every rank ranks alike
            parts.append(torch.tensor(seconds, dtype=second.dtype, device=second.device))
        stats = mean_over_ranks(torch.cat(parts).to(self.second_moment.dtype), examples)
        if seconds is not None:
            self._timings.append(stats[C + 1:].tolist())
        if not bool(torch.isfinite(stats[:C + 1]).all()):   # nothing non-finite enters the statistics
            self._schedule(t)   # (the times may have changed)
            return
        d = self.decay
        self.second_moment.mul_(d).add_((1 - d) * stats[:C])
        self.squared_norm.mul_(d).add_((1 - d) * stats[C])
        self.weight.mul_(d).add_(1 - d)
        best = int(torch.argmin(self.efficiency()))
        if best != self._choice:
            self.history.append((t + 1, self._label(best)))
        self._choice = best
        self._schedule(t)

    def _schedule(self, t: int) -> None:
        """After measuring call ``t``: the next call that measures, one interval on for the choice now made."""
        self._next = t + self.interval()

    def variance(self) -> Tensor:
        """``(C,)``: each candidate's measured variance of one estimate (summed over units, mean over examples)."""
        w = self.weight.clamp_min(1e-30)
        return ((self.second_moment - self.squared_norm) / w).clamp_min(0)

    def seconds(self) -> list[float] | None:
        """Per candidate, the seconds of a step with it: its own call plus the rest of the step, each the median
        of the warm-up calls timed so far (frozen after the warm-up); ``None`` before any timing (and in the
        network view, or with ``cost="evaluations"``)."""
        if not self._timings:
            return None
        med = self._own_seconds()
        return [med[i] + med[-1] for i in range(len(self.sizes))]

    def efficiency(self) -> Tensor:
        """``(C,)``: variance × seconds per step (``cost="time"``, once timed) or × f-evaluations; the least is
        chosen."""
        secs = self.seconds() if self.cost_model == "time" else None
        cost = secs if secs is not None else self.costs
        return self.variance() * torch.tensor(cost, dtype=self.second_moment.dtype, device=self.second_moment.device)

    @property
    def _per(self) -> str:
        return "seconds per step" if self.cost_model == "time" and self._timings else "evaluations"

    @property
    def criterion(self) -> str:
        """How the choice is made: ``"least variance x seconds per step"`` or ``"... x f-evaluations per example"``."""
        return f"least variance x {'seconds per step' if self._per != 'evaluations' else 'f-evaluations per example'}"

    @property
    def chosen(self) -> str:
        """The candidate in use, e.g. ``"disarm(samples=1)"`` (``""`` before the first call)."""
        return self._label(self._choice) if self.sizes else ""

    @property
    def measuring_fraction(self) -> float:
        """Share of this site's f-evaluations spent on measuring (beyond what the chosen estimator needed)."""
        total, extra = self._spent
        return extra / total if total > 0 else 0.0

    def report(self) -> dict:
        """What auto chose and why: per candidate its samples, f-evaluations, seconds per step (when timed: its
        own call's and the whole step's), variance, and variance × cost."""
        if not self.sizes:
            return {"chosen": "", "calls": 0, "candidates": {}}
        var, eff = self.variance().tolist(), self.efficiency().tolist()
        secs = self.seconds()
        own = self._own_seconds() if secs is not None else None
        cands = {}
        for i in range(len(self.sizes)):
            row = {"evaluations": self.costs[i], "variance": var[i], "variance_x_evaluations": var[i] * self.costs[i]}
            if secs is not None:
                row.update(seconds_per_call=own[i], seconds_per_step=secs[i], variance_x_seconds=var[i] * secs[i])
            row["efficiency"] = eff[i]
            cands[self._label(i)] = row
        out = {"chosen": self.chosen, "calls": self._calls, "budget": self._budget, "distribution": self._dist.name,
               "evaluations_spent": self._spent[0], "measuring_fraction": self.measuring_fraction,
               "measured": self.weight.item() > 0,
               "criterion": self.criterion, "candidates": cands, "history": list(self.history)}
        out["interval"], out["next_measuring_call"] = self.interval(), self._next
        if secs is not None:
            out["timed_calls"] = len(self._timings)
            out["seconds_rest_of_step"] = own[-1]
        return out

    def _own_seconds(self) -> list[float]:
        """Per candidate, then the rest of the step: the median seconds over the warm-up calls timed (a negative
        entry: not measured, e.g. the rest before the first call)."""
        return [statistics.median(measured) if (measured := [v for v in col if v >= 0]) else 0.0
                for col in zip(*self._timings)]

    def extra_repr(self) -> str:
        head = (f"every={self.every}, warmup={self.warmup}, decay={self.decay}, cost={self.cost_model!r}, "
                f"overhead={self.overhead}")
        if not self.sizes:
            return head + ", not yet used"
        eff = self.efficiency().tolist()
        ranked = sorted(range(len(self.sizes)), key=lambda i: eff[i])
        table = ", ".join(f"{self._label(i)}: {eff[i]:.3g}" for i in ranked)
        return (f"{head}, budget={self._budget}, calls={self._calls}, chosen={self.chosen}, measuring "
                f"fraction={self.measuring_fraction:.3f}; variance x {self._per}: {table}")
