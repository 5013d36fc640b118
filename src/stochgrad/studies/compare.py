"""``stochgrad compare``: bias, variance and cost of every estimator, and how variance scales with the
number of independent noise sources (the question the paper's §5 leaves open), for each distribution of units.

Parts, all against exact gradients, each for the Bernoulli units and for the categorical ones (the estimators
that support them):

1. **Problems** ([`stochgrad.problems.suite`][stochgrad.problems.suite], [`categorical_suite`][stochgrad.problems.categorical_suite]): bias with
   its standard error, variance, MSE, f-evaluations, wall time per estimate, efficiency
   ``1 / (variance × time)``.
2. **Scaling**: relative variance ``Σ_i Var(ĝ_i) / ‖∇‖²`` against the number of units (Bernoulli: ``D`` = 1 …
   1024; categorical: ``n`` units of ``K = 10`` classes, and ``K`` classes of ``n = 8`` units) on two losses whose
   expectation has a closed form ([`scaling_losses`][stochgrad.studies.compare.scaling_losses]), a fitted exponent per estimator and loss.
3. **Race** (Bernoulli): Adam on the logits from the same start, the exact expected loss against steps and time.

**Cost-aware sizes.** The estimators' costs per estimate differ by three orders of magnitude
([`RELATIVE_COST`][stochgrad.studies.compare.RELATIVE_COST]), so each measurement gets at most [`Config.budget`][stochgrad.studies.compare.Config.budget] units of work (estimates ×
units × relative cost): the cheap estimators get every estimate asked for, an expensive one fewer, and a
scaling point that would leave it fewer than [`Config.min_estimates`][stochgrad.studies.compare.Config.min_estimates] is not measured (with the default
budget ``rodeo`` and ``auto`` stop at D = 256). ``report.md`` lists every such limit. The full study takes
about 4 minutes on one core of a 2-core machine (``--quick``: under a minute).

**Resumable.** Every measurement is a task with its own generator (seeded by ``seed`` and the task), so tasks
can run in any order and a task's result never depends on another's; ``progress.json`` in ``--out`` keeps
each finished task, written after every one. ``run(..., resume=True)`` (``--resume``) skips them: an
interrupted run resumed writes the same ``results.json`` as one run straight through. ``report.md``, the JSON
files and the plots are written after each part, so an interrupted run leaves what it finished.

Outputs ``report.md``, ``results.json``, ``results_categorical.json``, ``timings.json`` and PNG plots in
``--out``. The JSON is split by what decides each number:

- ``results.json`` (keyed by estimator) and ``results_categorical.json``: every number that follows from
  the configuration, the seed and the code (bias, variance, scaling, the race's losses, the findings about
  them) and the environment without what the moment decides (torch, python, threads, CPU, commit). Two runs
  with the same seed and code write these files **byte for byte identical**.
- ``timings.json``: what the clock and the moment decide, shaped like the results it belongs to: time per
  estimate (median, range, all repeats), efficiency ``1 / (variance × time)`` with its range, the race's
  clock, the efficiency findings, the wall time and the full environment with its date and the machine's
  load ([`CLOCK_KEYS`][stochgrad.studies.compare.CLOCK_KEYS]; ``"categorical"`` holds the categorical part's timings).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass

import torch

from .. import problems as P
from ..checks import MIN_ESTIMATES, check_unbiased, sample_gradients
from ..estimators import REGISTRY, get_estimator
from ..exact import MAX_UNITS, all_states, exact_expectation
from ..files import reason, write_atomic
from ..options import (DEVICE, FOLDER, NON_NEGATIVE, POSITIVE, POSITIVE_FLOAT, SEED, OptionError, Options, integer,
                       unknown_names)
from ..runinfo import environment
from . import compare_report as report
from .compare_reference import FULL_RUN_EXPONENTS  # noqa: F401 (the reference the quick run is held against)
from .compare_report import (fit_exponent, growth, growth_class, quick_vs_full, scaling_sentences,  # noqa: F401
                             styles, timing_findings)

#: Time of one estimate per unit (per class, for categorical units), relative to ``reinforce``'s, measured in this
#: study on a 2-core machine with one thread (state warmed up; ``auto`` with its measuring calls); 1 for the
#: estimators not named. It sizes the expensive estimators' measurements (`Config.budget`) and weighs the
#: progress bar's ETA. ``finite_difference`` evaluates f twice per unit, so its cost grows with the units too
#: (`relative_cost`).
RELATIVE_COST = {"learned": 3, "rebar": 4, "relax": 4, "spsa": 1.5, "node_perturbation": 2, "gumbel_rao": 50,
                 "reinmax": 8, "carms": 40, "arms": 2, "double_cv": 3, "rodeo": 150, "auto": 40}


def relative_cost(name: str, units: int) -> float:
    """[`RELATIVE_COST`][stochgrad.studies.compare.RELATIVE_COST] of ``name`` at ``units`` units (``finite_difference``: ``2·units``)."""
    return 2.0 * units if name == "finite_difference" else float(RELATIVE_COST.get(name, 1))


@dataclass
class Config(Options):
    """The study's sizes ([`make`][stochgrad.studies.compare.Config.make] fills in the quick or the full run's), checked when built and when
    [`run`][stochgrad.studies.compare.run] starts ([`stochgrad.options`][stochgrad.options]).

    ``budget``: the most work one measurement may take, in estimates × units × [`relative_cost`][stochgrad.studies.compare.relative_cost];
    ``min_estimates``: a scaling point that the budget leaves fewer estimates than this is not measured.
    ``call_elements``: estimates × units × relative cost per call (the memory of one call).
    """

    OPTIONS = {"device": DEVICE, "seed": SEED, "problem_estimates": integer(MIN_ESTIMATES), "scaling_D": POSITIVE,
               "scaling_estimates": integer(2), "scaling_warmup": NON_NEGATIVE, "race_steps": POSITIVE,
               "race_units": POSITIVE, "timing_repeats": POSITIVE, "categorical_units": POSITIVE,
               "categorical_classes": integer(2), "budget": POSITIVE_FLOAT, "min_estimates": integer(2),
               "call_elements": POSITIVE}

    quick: bool = False
    estimators: tuple[str, ...] = ()
    device: str = "cpu"
    seed: int = 0
    problem_estimates: int = 40000
    scaling_D: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
    scaling_estimates: int = 2000
    scaling_warmup: int = 100   # calls before measuring: baselines settle, REBAR/RELAX/learned tune
    race_steps: int = 500
    race_units: int = 10
    timing_repeats: int = 5     # timings per estimator and problem, interleaved: median and spread
    categorical_units: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
    categorical_classes: tuple[int, ...] = (2, 3, 4, 8, 16, 32, 64)
    budget: float = 1e8
    min_estimates: int = 500
    call_elements: int = 200000

    @classmethod
    def make(cls, quick=False, estimators=None, device="cpu", seed=0, **over):
        """The full study's sizes, or with ``quick`` the smaller ones; ``over``: any field."""
        names = tuple(estimators) if estimators else tuple(n for n in REGISTRY if n != "exact")
        base = dict(problem_estimates=4000, scaling_D=(1, 4, 16, 64, 256, 1024), scaling_estimates=500,
                    scaling_warmup=10, race_steps=150, categorical_units=(1, 4, 16, 64),
                    categorical_classes=(2, 4, 16, 64), budget=1e7, min_estimates=200) if quick else {}
        base.update(over)
        return cls(quick=quick, estimators=names, device=device, seed=seed, **base)

    def check(self) -> None:
        """Every estimator registered."""
        unknown = unknown_names(self.estimators, REGISTRY)
        if unknown:
            raise OptionError("estimators", unknown)

    def as_dict(self) -> dict:
        """The configuration as JSON writes it (tuples as lists)."""
        return json.loads(json.dumps(asdict(self)))


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _samples(name):
    # auto gets the budget of the two-sample estimators (2 f-evaluations), so it chooses among all of them
    return 2 if name == "auto" else max(1, REGISTRY[name].min_samples)


def _gen(cfg, salt=0):
    return torch.Generator(device=cfg.device).manual_seed(cfg.seed * 1000 + salt)


def _estimator(name: str):
    """A fresh estimator; ``auto`` ranks by f-evaluations here (machine-independent: results.json repeats)."""
    return get_estimator(name, cost="evaluations") if name == "auto" else get_estimator(name)


def _stateful(name: str) -> bool:
    """Whether estimator ``name`` carries state from call to call (it then makes warm-up calls first)."""
    return REGISTRY[name]().stateful


def names_for(cfg: Config, distribution: str) -> list[str]:
    """The configured estimators that support ``distribution`` (``exact`` aside: it is the reference)."""
    return [n for n in cfg.estimators if n != "exact" and distribution in REGISTRY[n].distributions]


# ---- sizes ------------------------------------------------------------------------------------------
def sizes(cfg: Config, name: str, elements: int, wanted: int, minimum: int = 2) -> tuple[int, int] | None:
    """``(estimates, per call)`` for one measurement of ``name`` on ``elements`` units (× classes): at most
    ``wanted`` estimates and [`Config.budget`][stochgrad.studies.compare.Config.budget] units of work; ``None`` when that leaves fewer than ``minimum``."""
    cost = relative_cost(name, elements) * elements
    n = min(wanted, int(cfg.budget // cost))
    if n < minimum:
        return None
    return n, min(n, max(1, int(cfg.call_elements // cost)))


# ---- 1. problems ------------------------------------------------------------------------------------
def _dist(p):
    """The problem's distribution as ``expect`` takes it (``None``: Bernoulli logits, the fast path)."""
    return None if p.distribution == "bernoulli" else p.distribution


def suite(cfg: Config, distribution: str):
    """The problems of ``distribution`` with exact gradients ([`stochgrad.problems`][stochgrad.problems])."""
    return P.suite(device=cfg.device) if distribution == "bernoulli" else P.categorical_suite(device=cfg.device)


def _elements(p) -> int:
    return p.logits.shape[-1] * (p.logits.shape[-2] if p.distribution == "categorical" else 1)


def problem_stats(cfg: Config, name: str, p, salt: int) -> dict:
    """One estimator on one problem: bias, variance, MSE, f-evaluations, verdict (``check_unbiased``)."""
    n_est, batch = sizes(cfg, name, _elements(p), cfg.problem_estimates, MIN_ESTIMATES)
    est = _estimator(name).to(cfg.device)
    r = check_unbiased(est, p.f, p.logits, estimates=n_est, batch=min(500, batch), samples=_samples(name),
                       generator=_gen(cfg, salt), warmup=10, distribution=_dist(p))
    out = {"bias_norm": r.bias.norm().item(), "bias_se_norm": r.standard_error.norm().item(),
           "max_abs_z": r.max_abs_z, "variance": r.variance.sum().item(), "variance_se": r.variance_se,
           "relative_variance": r.relative_variance, "mse": r.mse,
           "evaluations": est.evaluations(p.n, _samples(name)), "estimates": r.estimates,
           "declared_unbiased": r.declared_unbiased, "verdict": r.verdict, "n": p.n}
    if hasattr(est, "chosen"):   # auto: its choice after the check, and what measuring cost on top
        out.update(auto_choice=est.chosen, measuring_fraction=est.measuring_fraction)
    return out


def problem_timings(cfg: Config, names: list[str], p, salt: int) -> dict:
    """Seconds per estimate of each estimator on one problem (one call on 500 replicas, after 10 warm-up calls),
    ``cfg.timing_repeats`` times each; the order of the estimators rotates every round so that a slow spell of a
    shared machine is spread over all of them instead of landing on one. ``{name: [seconds, ...]}``."""
    objects, batch = {}, {}
    for name in names:
        objects[name] = _estimator(name).to(cfg.device)
        batch[name] = min(500, sizes(cfg, name, _elements(p), 500, 1)[1])
        sample_gradients(objects[name], p.f, p.logits, 10 * batch[name], batch[name], _samples(name),
                         _gen(cfg, salt), distribution=_dist(p))
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for rnd in range(cfg.timing_repeats):
        for name in names[rnd % len(names):] + names[:rnd % len(names)]:
            _sync(cfg.device)
            t0 = time.perf_counter()
            sample_gradients(objects[name], p.f, p.logits, batch[name], batch[name], _samples(name),
                             _gen(cfg, salt + 1 + rnd), distribution=_dist(p))
            _sync(cfg.device)
            seconds[name].append((time.perf_counter() - t0) / batch[name])
    return seconds


def timing_summary(seconds: list[float], r: dict) -> dict:
    """Median time and its range over the repeats; efficiency ``1 / (variance × time)`` at the median, and
    the range it spans over the timings' range and the variance's ± 2 standard errors."""
    ts = sorted(seconds)
    med = ts[len(ts) // 2] if len(ts) % 2 else 0.5 * (ts[len(ts) // 2 - 1] + ts[len(ts) // 2])
    var, se = r["variance"], r["variance_se"] if math.isfinite(r["variance_se"]) else 0.0
    eff = 1.0 / (var * med) if var > 0 else math.inf
    lo = 1.0 / ((var + 2 * se) * ts[-1]) if var > 0 else math.inf
    hi = 1.0 / ((var - 2 * se) * ts[0]) if var - 2 * se > 0 else math.inf
    return {"seconds_per_estimate": med, "seconds_min": ts[0], "seconds_max": ts[-1], "seconds_all": seconds,
            "efficiency": eff, "efficiency_range": [lo, hi]}


# What the clock or the moment decides: written to timings.json, never to results.json (see the module's doc)
CLOCK_KEYS = frozenset({"seconds_per_estimate", "seconds_min", "seconds_max", "seconds_all", "efficiency",
                        "efficiency_range", "seconds", "wall_seconds", "timing_findings", "environment"})


def split_clock(obj, keys=CLOCK_KEYS):
    """``(kept, clock)``: ``obj`` (nested dicts) without the entries named in ``keys``, at any depth, and
    those entries in the same nesting (dicts left empty by the split are dropped from ``clock``)."""
    if not isinstance(obj, dict):
        return obj, None
    kept, clock = {}, {}
    for k, v in obj.items():
        if k in keys:
            clock[k] = v
            continue
        kept[k], c = split_clock(v, keys)
        if c:
            clock[k] = c
    return kept, clock


# ---- 2. scaling -------------------------------------------------------------------------------------
TARGET = 0.45


def scaling_losses(distribution: str = "bernoulli", K: int = 2):
    """``{"separable": (f, mean), "coupled": (f, mean)}``: two quadratic losses and their expectations in closed
    form (the exact gradient is autograd through ``mean``). Bernoulli units ``b`` ``(..., D)``:
    ``Σ_i (b_i − t)²`` and ``(Σ_i b_i − t·D)² / D``; categorical one-hot ``h`` ``(..., n, K)`` with class values
    ``w_k = k / (K − 1)``: the same of ``w·h_i`` (at ``K = 2`` the Bernoulli losses)."""
    t = TARGET
    if distribution == "bernoulli":
        def value(h):
            return h

        def moments(a):   # mean and second moment of each unit's value
            p = torch.sigmoid(a)
            return p, p
    else:
        def w(like):
            return torch.linspace(0, 1, K, dtype=like.dtype, device=like.device)

        def value(h):
            return (h * w(h)).sum(-1)

        def moments(a):
            p, v = a.softmax(-1), w(a)
            return (p * v).sum(-1), (p * v * v).sum(-1)

    def separable(h):
        return (value(h) - t).square().sum(-1)

    def separable_mean(a):   # Σ E(v − t)² = Σ (E v² − 2t E v + t²)
        mu, second = moments(a)
        return (second - 2 * t * mu + t * t).sum()

    def coupled(h):   # (Σ v − t·n)² / n: every unit interacts with every other
        v = value(h)
        return (v.sum(-1) - t * v.shape[-1]).square() / v.shape[-1]

    def coupled_mean(a):   # E (S − tn)² / n = (Σ Var_i + (Σ μ_i − tn)²) / n
        mu, second = moments(a)
        n = mu.shape[-1]
        return ((second - mu.square()).sum() + (mu.sum() - t * n).square()) / n

    return {"separable": (separable, separable_mean), "coupled": (coupled, coupled_mean)}


#: The scaling axes of each distribution: name → (axis letter, configuration field of its points, the logits at a
#: point, the point's classes K, the smallest point of the exponent's fit)
AXES = {
    "bernoulli": {"D": ("D", "scaling_D", lambda x, dtype, device: torch.full((x,), 1.0, dtype=dtype, device=device),
                        lambda x: 2, 4)},
    "categorical": {
        "units": ("n", "categorical_units",
                  lambda x, dtype, device: torch.linspace(-1, 1, 10, dtype=dtype, device=device).expand(x, 10).clone(),
                  lambda x: 10, 2),
        "classes": ("K", "categorical_classes",
                    lambda x, dtype, device: torch.linspace(-1, 1, x, dtype=dtype, device=device).expand(8, x).clone(),
                    lambda x: x, 2)},
}
UNITS_K, CLASSES_N = 10, 8   # the categorical axes' fixed K and n
WARMUP_BATCH = 100           # replicas per warm-up call (at most)


def scaling_point(cfg: Config, name: str, distribution: str, axis: str, loss: str, x: int, salt: int) -> dict | None:
    """Relative variance of ``name`` at one point of a scaling axis: ``{"relative_variance", "estimates",
    "evaluations"}``, or ``None`` when its cost leaves too few estimates ([`sizes`][stochgrad.studies.compare.sizes]) or ``exact`` cannot
    enumerate it."""
    letter, _, make_logits, classes, _ = AXES[distribution][axis]
    a = make_logits(x, torch.float64, cfg.device)
    units = a.shape[-1] if distribution == "bernoulli" else a.shape[-2]
    if REGISTRY[name].cost == "2^n" and units > MAX_UNITS:   # enumeration: n <= MAX_UNITS only
        return None
    n_est = cfg.scaling_estimates
    if name == "finite_difference":   # 2D evaluations of a D-unit f per estimate: its own limit too
        n_est = max(50, min(n_est, int(4e6 // (units * units))))
    size = sizes(cfg, name, a.numel(), n_est, min(cfg.min_estimates, n_est))
    if size is None:
        return None
    n_est, batch = size
    f, mean = scaling_losses(distribution, classes(x))[loss]
    x_ = a.clone().requires_grad_(True)
    (exact,) = torch.autograd.grad(mean(x_), x_)
    est = _estimator(name).to(cfg.device)
    gen = _gen(cfg, salt)
    dist = None if distribution == "bernoulli" else distribution
    if est.stateful and cfg.scaling_warmup:   # state updates per call: small calls suffice (and cost little)
        wb = min(batch, WARMUP_BATCH)
        sample_gradients(est, f, a, cfg.scaling_warmup * wb, wb, _samples(name), gen, distribution=dist)
    g = sample_gradients(est, f, a, n_est, batch, _samples(name), gen, distribution=dist)
    return {"relative_variance": (g.var(0).sum() / exact.square().sum()).item(), "estimates": n_est,
            "evaluations": est.evaluations(units, _samples(name))}


# ---- 3. race ----------------------------------------------------------------------------------------
def race_problems(cfg):
    """The two problems of the race: the separable toy and a logistic decoder, from σ = ½."""
    n = cfg.race_units
    toy = P.separable(n, logits=0.0, device=cfg.device)
    dec = P.decoder(n=n, d=3 * n, seed=4, device=cfg.device)
    dec.logits = torch.zeros_like(dec.logits)
    return [toy, dec]


def race(cfg: Config, name: str, p, salt: int) -> dict:
    """Adam on the logits with one estimator, the exact expected loss recorded against steps and time."""
    every = max(1, cfg.race_steps // 50)
    best = p.f(all_states(p.n, p.logits)).min().item()  # the loss of the best single state
    est = _estimator(name).to(cfg.device)
    gen = _gen(cfg, salt)
    a = p.logits.clone().requires_grad_(True)
    opt = torch.optim.Adam([a], lr=0.05)
    steps, times, losses, clock = [], [], [], 0.0
    for step in range(cfg.race_steps + 1):
        if step % every == 0 or step == cfg.race_steps:
            with torch.no_grad():
                steps.append(step)
                times.append(clock)
                losses.append(exact_expectation(p.f, a).item() - best)
        if step == cfg.race_steps:
            break
        _sync(cfg.device)
        t0 = time.perf_counter()
        opt.zero_grad()
        est(p.f, a, _samples(name), gen).backward()
        opt.step()
        _sync(cfg.device)
        clock += time.perf_counter() - t0
    return {"steps": steps, "seconds": times, "excess_loss": losses, "final_excess_loss": losses[-1]}


# ---- the plan: every measurement a task ----------------------------------------------------------------
PARTS = ("problems", "scaling", "race", "categorical")


@dataclass
class Task:
    """One measurement: ``key`` (where its result is kept), the ``part`` it belongs to, a ``label`` for the
    progress bar, its expected ``cost`` (work units, for the ETA) and ``run()`` → its JSON-ready result."""

    key: str
    part: str
    label: str
    cost: float
    run: object


def _call_cost(name: str, elements: int, estimates: int, batch: int, calls_extra: int = 0) -> float:
    # units of work (a reinforce estimate's unit: ~0.02 µs here): the estimates' elements and a fixed overhead per
    # call (~0.7 ms: 35,000 units), fitted to the study's own runs
    calls = -(-estimates // batch) + calls_extra
    return relative_cost(name, elements) * elements * estimates + 3.5e4 * calls


def plan(cfg: Config) -> list[Task]:
    """Every task of the study, in the order they run ([`PARTS`][stochgrad.studies.compare.PARTS])."""
    tasks: list[Task] = []
    for distribution, part in (("bernoulli", "problems"), ("categorical", "categorical")):
        names = names_for(cfg, distribution)
        for k, p in enumerate(suite(cfg, distribution)):
            salt = k if distribution == "bernoulli" else 300 + k
            for name in names:
                n_est, batch = sizes(cfg, name, _elements(p), cfg.problem_estimates, MIN_ESTIMATES)
                tasks.append(Task(f"problems/{distribution}/{p.name}/{name}", part, f"{p.name}: {name}",   # (+ the
                                  2.5 * _call_cost(name, _elements(p), n_est, min(batch, 500), 10),   # exact gradient)
                                  lambda name=name, p=p, salt=salt: problem_stats(cfg, name, p, salt)))
            if names:
                cost = 2.5 * sum(_call_cost(n, _elements(p), 500 * (10 + cfg.timing_repeats), 500) for n in names)
                tasks.append(Task(f"timing/{distribution}/{p.name}", part, f"{p.name}: timings", cost,
                                  lambda names=names, p=p, salt=salt: problem_timings(cfg, names, p, 99 + 10 * salt)))
        if distribution == "bernoulli":
            tasks += _scaling_tasks(cfg, "bernoulli", "scaling")
            for k, p in enumerate(race_problems(cfg)):
                for name in names:
                    tasks.append(Task(f"race/{p.name}/{name}", "race", f"race {p.name}: {name}",
                                      1.3 * _call_cost(name, p.n, cfg.race_steps, 1),   # (+ Adam)
                                      lambda name=name, p=p, k=k: race(cfg, name, p, 50 + k)))
        else:
            tasks += _scaling_tasks(cfg, "categorical", "categorical")
    return tasks


def _scaling_tasks(cfg: Config, distribution: str, part: str) -> list[Task]:
    tasks = []
    names = names_for(cfg, distribution)
    for a, (axis, (letter, field, make_logits, _, _)) in enumerate(AXES[distribution].items()):
        for lk, loss in enumerate(scaling_losses()):
            for name in names:
                for x in getattr(cfg, field):
                    elements = make_logits(x, torch.float64, "cpu").numel()
                    size = sizes(cfg, name, elements, cfg.scaling_estimates, min(cfg.min_estimates, cfg.scaling_estimates))
                    cost = 0.0 if size is None else _call_cost(name, elements, size[0], size[1], 0) + (
                        _call_cost(name, elements, cfg.scaling_warmup * min(size[1], WARMUP_BATCH),
                                   min(size[1], WARMUP_BATCH)) if _stateful(name) else 0.0)
                    salt = (7 + lk) if distribution == "bernoulli" else 200 + 10 * a + lk
                    tasks.append(Task(f"scaling/{distribution}/{axis}/{loss}/{name}/{x}", part,
                                      f"{loss} {letter}={x}: {name}", cost,
                                      lambda name=name, axis=axis, loss=loss, x=x, salt=salt:
                                      scaling_point(cfg, name, distribution, axis, loss, x, salt)))
    return tasks


# ---- assembling the results from the finished tasks ----------------------------------------------------
def _scaling_fit(cfg, done, distribution, axis, loss, name):
    letter, field, _, _, min_x = AXES[distribution][axis]
    xs, rel, estimates, evaluations, left_out = [], [], [], [], []
    for x in getattr(cfg, field):
        key = f"scaling/{distribution}/{axis}/{loss}/{name}/{x}"
        if key not in done:
            continue
        r = done[key]
        if r is None:
            left_out.append(x)
            continue
        xs.append(x)
        rel.append(r["relative_variance"])
        estimates.append(r["estimates"])
        evaluations.append(r["evaluations"])
    return {letter: xs, "relative_variance": rel, "exponent": fit_exponent(xs, rel, min_x), "estimates": estimates,
            "evaluations": evaluations, "left_out": left_out}


def _problems(cfg, done, distribution) -> dict:
    out: dict = {}
    for p in suite(cfg, distribution):
        clock = done.get(f"timing/{distribution}/{p.name}")
        for name in names_for(cfg, distribution):
            r = done.get(f"problems/{distribution}/{p.name}/{name}")
            if r is None:
                continue
            out.setdefault(name, {})[p.name] = {**r, **(timing_summary(clock[name], r) if clock else {})}
    return out


def assemble(cfg: Config, done: dict, env: dict) -> tuple[dict, dict]:
    """``(results, categorical)`` from the finished tasks ``done`` (any subset), in the shape of ``results.json``
    and ``results_categorical.json`` (with their timings: [`split_clock`][stochgrad.studies.compare.split_clock] separates them)."""
    names = names_for(cfg, "bernoulli")
    problems = _problems(cfg, done, "bernoulli")
    estimators = {}
    for name in names:
        e = {"declared_unbiased": REGISTRY[name].unbiased, "cost": REGISTRY[name].cost,
             "problems": problems.get(name, {}), "scaling": {}, "race": {}}
        for loss in scaling_losses():
            if any(k.startswith(f"scaling/bernoulli/D/{loss}/{name}/") for k in done):
                e["scaling"][loss] = _scaling_fit(cfg, done, "bernoulli", "D", loss, name)
        for p in race_problems(cfg):
            if f"race/{p.name}/{name}" in done:
                e["race"][p.name] = done[f"race/{p.name}/{name}"]
        estimators[name] = e
    results = {"config": {**cfg.as_dict(), "estimators": list(cfg.estimators), "scaling_D": list(cfg.scaling_D)},
               "environment": env, "estimators": estimators}
    cat_names = names_for(cfg, "categorical")
    categorical: dict = {}
    if cat_names:
        categorical = {"problems": _problems(cfg, done, "categorical"), "units": {}, "classes": {},
                       "units_K": UNITS_K, "classes_n": CLASSES_N}
        for axis in ("units", "classes"):
            for name in cat_names:
                for loss in scaling_losses():
                    if any(k.startswith(f"scaling/categorical/{axis}/{loss}/{name}/") for k in done):
                        categorical[axis].setdefault(name, {})[loss] = _scaling_fit(cfg, done, "categorical", axis,
                                                                                    loss, name)
    return results, categorical


def parts_done(cfg: Config, tasks: list[Task], done: dict) -> list[str]:
    """The parts whose every task is finished."""
    return [part for part in PARTS if all(t.key in done for t in tasks if t.part == part)
            and any(t.part == part for t in tasks)]


def limits(cfg: Config, results: dict, categorical: dict) -> list[str]:
    """Sentences naming where the budget cut an estimator's measurements (fewer estimates, points left out)."""
    lines = []
    for name, e in results["estimators"].items():
        for loss, s in e["scaling"].items():
            if s["left_out"] or (s["estimates"] and min(s["estimates"]) < cfg.scaling_estimates):
                cut = [f"{d}: {n}" for d, n in zip(s["D"], s["estimates"]) if n < cfg.scaling_estimates]
                text = f"`{name}` ({loss})"
                if s["left_out"]:
                    text += f": D = {', '.join(map(str, s['left_out']))} not measured"
                if cut:
                    text += f"{';' if s['left_out'] else ':'} fewer estimates at D = {', '.join(cut)}"
                lines.append(text)
        few = {p: r["estimates"] for p, r in e["problems"].items() if r["estimates"] < cfg.problem_estimates}
        if few:
            lines.append(f"`{name}` (problems): {', '.join(f'{n} estimates on {p}' for p, n in few.items())}")
    for axis, letter in (("units", "n"), ("classes", "K")):
        for name, losses in categorical.get(axis, {}).items():
            for loss, s in losses.items():
                if s["left_out"]:
                    lines.append(f"`{name}` (categorical, {loss}): {letter} = {', '.join(map(str, s['left_out']))} "
                                 "not measured")
    return lines


# ---- the run ------------------------------------------------------------------------------------------
STATE = "progress.json"
OUTPUTS = ("report.md", "results.json", "results_categorical.json", "timings.json", "variance_vs_units.png",
           "bias_vs_variance.png", "race.png", "categorical_scaling.png", STATE)


class RunError(RuntimeError):
    """A run that cannot start as asked (an earlier run in the folder, a checkpoint of other settings)."""


def _read_state(path: str) -> dict:
    try:
        with open(path) as fh:
            state = json.load(fh)
        if not isinstance(state, dict) or not isinstance(state.get("done"), dict) or "config" not in state:
            raise ValueError("not a compare checkpoint")
        return state
    except (OSError, ValueError) as err:
        raise RunError(f"{path} cannot be resumed ({err}); it was left as it is: remove the folder or point --out "
                       "elsewhere") from None


def open_folder(cfg: Config, out_dir: str, resume: bool, force: bool) -> dict:
    """The finished tasks to keep: those of ``out_dir``'s checkpoint with ``resume`` (same configuration only),
    none on a fresh run, which refuses a folder holding an earlier run's outputs unless ``force``."""
    FOLDER.check(out_dir, "out_dir")
    state_path = os.path.join(out_dir, STATE)
    if resume:
        if not os.path.exists(state_path):
            raise RunError(f"nothing to resume in {out_dir}: no {STATE} (start the run without --resume)")
        state = _read_state(state_path)
        if state["config"] != cfg.as_dict():
            diff = [k for k in cfg.as_dict() if state["config"].get(k) != cfg.as_dict()[k]]
            raise RunError(f"{out_dir} holds a compare run with other settings ({', '.join(diff)}): resume it with "
                           "the same flags, or point --out elsewhere")
        return state
    earlier = [f for f in OUTPUTS if os.path.lexists(os.path.join(out_dir, f))]
    if earlier and not force:
        raise RunError(f"{out_dir} holds an earlier run ({', '.join(earlier)}): --resume to continue it, --force to "
                       "replace it, or point --out elsewhere")
    return {"done": {}}


def write_outputs(cfg: Config, out_dir: str, done: dict, env: dict, wall: float, tasks: list[Task],
                  plot_parts: tuple = ()) -> tuple[dict, dict]:
    """``report.md``, ``results.json``, ``results_categorical.json``, ``timings.json`` from the finished tasks,
    and the plots of ``plot_parts``; returns ``(results, categorical)`` with their timings."""
    results, categorical = assemble(cfg, done, env["seed"])
    complete = parts_done(cfg, tasks, done)
    results["parts"] = complete
    results["limits"] = limits(cfg, results, categorical)
    results["findings"] = report.findings(results) if "problems" in complete else []
    results["scaling_sentences"] = ([s for ss in scaling_sentences(results).values() for s in ss]
                                    if "scaling" in complete else [])
    results["quick_vs_full"] = quick_vs_full(results) if cfg.quick and "scaling" in complete else []
    results["timing_findings"] = timing_findings(results) if "problems" in complete else []
    results["wall_seconds"] = wall
    kept, clock = split_clock(results)
    clock["environment"] = env["clock"]
    kept["environment"] = env["seed"]
    write_json_plain(os.path.join(out_dir, "results.json"), kept)
    if categorical:
        cat_kept, clock["categorical"] = split_clock(categorical)
        cat_kept["environment"] = env["seed"]
        write_json_plain(os.path.join(out_dir, "results_categorical.json"), cat_kept)
    write_json_plain(os.path.join(out_dir, "timings.json"), clock)
    plots = report.plot(results, categorical, out_dir, plot_parts, complete)
    report.write_report(results, categorical, out_dir, plots, complete, asdict(Config()), env["clock"])
    results["categorical"] = categorical
    return results, categorical


def write_json_plain(path: str, obj: dict) -> None:
    """``obj`` as indented JSON, atomically (the environment is already in it)."""
    write_atomic(path, json.dumps(obj, indent=1, default=float))


def run(cfg: Config, out_dir: str, progress: bool = True, resume: bool = False, force: bool = False) -> dict:
    """Runs the study (or with ``resume`` what an interrupted run left) and writes ``report.md``, the JSON files
    and the plots to ``out_dir``, after each part; returns the results with their timings and categorical part
    (``results["categorical"]``), as ``report.md`` shows them. ``force``: replace an earlier run's outputs.
    Raises [`RunError`][stochgrad.studies.compare.RunError] when the folder holds an earlier run (without ``resume`` or ``force``) or a
    checkpoint of other settings."""
    from tqdm import tqdm

    cfg.validate()
    state = open_folder(cfg, out_dir, resume, force)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise RunError(f"--out {out_dir}: cannot create the folder ({reason(err)})") from None
    tasks = plan(cfg)
    done = state["done"]
    env = state.get("environment") or {"seed": environment(date=False)}
    env["clock"] = environment()
    wall = state.get("wall_seconds", 0.0)
    state_path = os.path.join(out_dir, STATE)
    todo = [t for t in tasks if t.key not in done]
    if resume and not todo and state.get("complete"):
        return {"already_complete": True}
    total = sum(t.cost for t in tasks)
    # the bar counts expected work (Task.cost), not tasks, and its rate is the average since the start: an ETA
    # that does not swing when a cheap estimator follows an expensive one
    bar = tqdm(total=total, initial=total - sum(t.cost for t in todo), disable=not progress, smoothing=0,
               bar_format="compare {percentage:3.0f}%|{bar:24}| {elapsed} elapsed, {remaining} left  {desc}")
    seconds = state.get("seconds", {})
    plotted: set = set()
    before = set(parts_done(cfg, tasks, done))
    t0 = time.perf_counter()
    for i, task in enumerate(todo):
        bar.set_description_str(f"{task.part}: {task.label}", refresh=True)
        started = time.perf_counter()
        result = task.run()
        seconds[task.key] = time.perf_counter() - started
        done[task.key] = json.loads(json.dumps(result, default=float))   # exactly what a resumed run reads back
        now = wall + time.perf_counter() - t0
        write_json_plain(state_path, {"config": cfg.as_dict(), "environment": {"seed": env["seed"]},
                                      "wall_seconds": now, "done": done, "seconds": seconds})
        bar.update(task.cost)
        finished = set(parts_done(cfg, tasks, done)) - before - plotted
        if finished:   # a part just ended: the outputs so far, and its plots
            bar.set_description_str(f"{', '.join(sorted(finished))}: writing the report and plots", refresh=True)
            write_outputs(cfg, out_dir, done, env, now, tasks, tuple(finished))
            plotted |= finished
    bar.close()
    missing = tuple(p for p in parts_done(cfg, tasks, done) if p not in plotted)   # a resumed run's earlier parts
    now = wall + time.perf_counter() - t0
    results, _ = write_outputs(cfg, out_dir, done, env, now, tasks, missing)
    write_json_plain(state_path, {"config": cfg.as_dict(), "environment": {"seed": env["seed"]},
                                  "wall_seconds": now, "done": done, "seconds": seconds, "complete": True})
    return results
