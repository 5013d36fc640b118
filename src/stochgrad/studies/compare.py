"""``stochgrad compare``: bias, variance and cost of every estimator, and how variance scales with the
number of independent noise sources (the question seed §5 leaves open).

Three parts, all against exact gradients:

1. **Problems** (:func:`stochgrad.problems.suite`): bias with its standard error, variance, MSE, wall time
   per estimate, evaluations of ``f``, efficiency ``1 / (variance × time)``.
2. **Scaling**: relative variance ``Σ_i Var(ĝ_i) / ‖∇‖²`` against the number of units ``D`` (1 … 1024)
   on two quadratic losses with closed-form gradients (all logits equal), a fitted exponent per
   estimator and loss, one sentence each.
3. **Race**: Adam on the logits from the same start, the exact expected loss against steps and time.

Outputs ``report.md``, ``results.json``, ``results_categorical.json``, ``timings.json`` and PNG plots in
``--out``. The JSON is split by what decides each number:

- ``results.json`` (keyed by estimator) and ``results_categorical.json``: every number that follows from
  the configuration, the seed and the code (bias, variance, scaling, the race's losses, the findings about
  them) and the environment without its date (torch, python, threads, commit). All noise comes from
  generators seeded by ``seed``, so two runs with the same seed and code write these files **byte for
  byte identical** (``tests/test_compare.py`` runs a tiny study twice and compares the bytes).
- ``timings.json``: what the clock and the moment decide, shaped like the results it belongs to: time per
  estimate (median, range, all repeats), efficiency ``1 / (variance × time)`` with its range, the race's
  clock, the efficiency findings, the wall time and the full environment with its date
  (:data:`CLOCK_KEYS`; ``"categorical"`` holds the categorical part's timings).

``report.md`` and the plots show both.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch

from .. import problems as P
from ..checks import check_unbiased, sample_gradients
from ..estimators import REGISTRY, get_estimator
from ..exact import MAX_UNITS, all_states, exact_expectation
from ..options import DEVICE, FOLDER, NON_NEGATIVE, POSITIVE, SEED, OptionError, Options, integer
from ..runinfo import environment, write_json
from .compare_reference import FULL_RUN_EXPONENTS, SOURCE as REFERENCE_SOURCE
from .training import save_figure


@dataclass
class Config(Options):
    """The study's sizes (:meth:`make` fills in the quick or the full run's), checked when built and when
    :func:`run` starts (:mod:`stochgrad.options`)."""

    OPTIONS = {"device": DEVICE, "seed": SEED, "problem_estimates": integer(2), "scaling_D": POSITIVE,
               "scaling_estimates": integer(2), "scaling_warmup": NON_NEGATIVE, "race_steps": POSITIVE,
               "race_units": POSITIVE, "timing_repeats": POSITIVE}

    quick: bool = False
    estimators: tuple[str, ...] = ()
    device: str = "cpu"
    seed: int = 0
    problem_estimates: int = 40000
    scaling_D: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
    scaling_estimates: int = 4000
    scaling_warmup: int = 100   # calls before measuring: baselines settle, REBAR/RELAX/learned tune
    race_steps: int = 2000
    race_units: int = 10
    timing_repeats: int = 5     # timings per estimator and problem, interleaved: median and spread

    @classmethod
    def make(cls, quick=False, estimators=None, device="cpu", seed=0, **over):
        names = tuple(estimators) if estimators else tuple(n for n in REGISTRY if n != "exact")
        base = dict(problem_estimates=2000, scaling_D=(1, 4, 16, 64, 256, 1024), scaling_estimates=300,
                    scaling_warmup=10, race_steps=150) if quick else {}
        base.update(over)
        return cls(quick=quick, estimators=names, device=device, seed=seed, **base)

    def check(self) -> None:
        """Every estimator registered."""
        unknown = [n for n in self.estimators if n not in REGISTRY]
        if unknown:
            raise OptionError("estimators", f"must be registered names ({', '.join(REGISTRY)}), got {', '.join(unknown)}")


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


# ---- 1. problems ------------------------------------------------------------------------------------
def _dist(p):
    """The problem's distribution as ``expect`` takes it (``None``: Bernoulli logits, the fast path)."""
    return None if p.distribution == "bernoulli" else p.distribution


def measure_problems(cfg: Config, tick, problems=None, names=None) -> dict:
    """Per estimator and problem: bias, variance, cost. Default: the Bernoulli suite and ``cfg.estimators``."""
    out: dict = {}
    batch = min(500, cfg.problem_estimates)
    for k, p in enumerate(P.suite(device=cfg.device) if problems is None else problems):
        objects = {}
        for name in cfg.estimators if names is None else names:
            est = objects[name] = _estimator(name).to(cfg.device)
            r = check_unbiased(est, p.f, p.logits, estimates=cfg.problem_estimates, batch=batch,
                               samples=_samples(name), generator=_gen(cfg, k), warmup=10, distribution=_dist(p))
            out.setdefault(name, {})[p.name] = {
                "bias_norm": r.bias.norm().item(), "bias_se_norm": r.standard_error.norm().item(),
                "max_abs_z": r.max_abs_z, "variance": r.variance.sum().item(), "variance_se": r.variance_se,
                "relative_variance": r.relative_variance, "mse": r.mse,
                "evaluations": est.evaluations(p.n, _samples(name)),
                "declared_unbiased": r.declared_unbiased, "verdict": r.verdict, "n": p.n,
                **({"auto_choice": est.chosen} if hasattr(est, "chosen") else {})}   # auto: its choice after it
            tick()
        for name, seconds in time_estimators(cfg, objects, p, batch).items():
            out[name][p.name].update(timing_summary(seconds, out[name][p.name]))
    return out


def time_estimators(cfg: Config, objects: dict, p, batch: int) -> dict[str, list[float]]:
    """Seconds per estimate (one call on ``batch`` replicas), ``cfg.timing_repeats`` times each; the
    order of the estimators rotates every round so that a slow spell of a shared machine is spread over
    all of them instead of landing on one."""
    names = list(objects)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for rnd in range(cfg.timing_repeats):
        for name in names[rnd % len(names):] + names[:rnd % len(names)]:
            _sync(cfg.device)
            t0 = time.perf_counter()
            sample_gradients(objects[name], p.f, p.logits, batch, batch, _samples(name), _gen(cfg, 99 + rnd),
                             distribution=_dist(p))
            _sync(cfg.device)
            seconds[name].append((time.perf_counter() - t0) / batch)
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


def write_results(out_dir: str, results: dict, categorical: dict) -> None:
    """Writes ``results.json`` and ``results_categorical.json`` (what the seed decides, environment
    without the date) and ``timings.json`` (:data:`CLOCK_KEYS`, environment with the date)."""
    kept, clock = split_clock(results)
    write_json(os.path.join(out_dir, "results.json"), kept, date=False, default=float)
    if categorical:
        cat_kept, clock["categorical"] = split_clock(categorical)
        write_json(os.path.join(out_dir, "results_categorical.json"), cat_kept, date=False, default=float)
    write_json(os.path.join(out_dir, "timings.json"), clock, default=float)


# ---- 2. scaling -------------------------------------------------------------------------------------
TARGET = 0.45


def scaling_losses():
    """Two quadratic losses with closed-form expected gradients when all units share ``p = σ(a)``."""

    def separable(b):
        return (b - TARGET).square().sum(-1)

    def separable_grad(a):
        s = torch.sigmoid(a)
        return s * (1 - s) * ((1 - TARGET) ** 2 - TARGET ** 2)

    def coupled(b):  # (Σ b − t·D)² / D: every unit interacts with every other
        D = b.shape[-1]
        return (b.sum(-1) - TARGET * D).square() / D

    def coupled_grad(a):
        # E L = (Σ pq + (Σ p − tD)²)/D, so ∂/∂a_i = pq[(1 − 2p) + 2(Σ p − tD)]/D
        D = a.shape[-1]
        s = torch.sigmoid(a)
        return s * (1 - s) * ((1 - 2 * s) + 2 * (s.sum(-1, keepdim=True) - TARGET * D)) / D

    return {"separable": (separable, separable_grad), "coupled": (coupled, coupled_grad)}


def _scaling_estimates(cfg, name, D):
    n = cfg.scaling_estimates
    if name == "finite_difference":  # 2D evaluations of a D-unit f per estimate
        n = max(50, min(n, int(4e6 // (D * D))))
    return n


def measure_scaling(cfg: Config, tick, logit: float = 1.0) -> dict:
    """Relative variance against the number of units D on the two losses of :func:`scaling_losses`, and
    its fitted exponent: ``{estimator: {loss: {"D", "relative_variance", "exponent"}}}``.
    """
    out: dict = {}
    for lk, (loss, (f, grad_fn)) in enumerate(scaling_losses().items()):
        for name in cfg.estimators:
            Ds, rel = [], []
            for D in cfg.scaling_D:
                if REGISTRY[name].cost == "2^n" and D > MAX_UNITS:  # enumeration: n <= MAX_UNITS only
                    tick()
                    continue
                a = torch.full((D,), logit, dtype=torch.float64, device=cfg.device)
                exact = grad_fn(a)
                est = _estimator(name).to(cfg.device)
                n_est = _scaling_estimates(cfg, name, D)
                batch = min(n_est, max(1, 200000 // D))
                stateful = any(True for _ in est.buffers()) or any(True for _ in est.parameters())
                g = sample_gradients(est, f, a, n_est, batch, _samples(name), _gen(cfg, 7 + lk),
                                     warmup=cfg.scaling_warmup if stateful else 0)
                rel.append((g.var(0).sum() / exact.square().sum()).item())
                Ds.append(D)
                tick()
            out.setdefault(name, {})[loss] = {"D": Ds, "relative_variance": rel,
                                              "exponent": fit_exponent(Ds, rel)}
    return out


def fit_exponent(Ds, values, min_D: int = 4) -> float:
    """Least-squares slope of log(value) on log(D) over ``D >= min_D`` (the large-D growth rate)."""
    pts = [(math.log(d), math.log(v)) for d, v in zip(Ds, values) if d >= min_D and v > 0]
    if len(pts) < 2:
        return float("nan")
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


# ---- 3. race ----------------------------------------------------------------------------------------
def race_problems(cfg):
    """The two problems of the race: the separable toy and a logistic decoder, from σ = ½."""
    n = cfg.race_units
    toy = P.separable(n, logits=0.0, device=cfg.device)
    dec = P.decoder(n=n, d=3 * n, seed=4, device=cfg.device)
    dec.logits = torch.zeros_like(dec.logits)
    return [toy, dec]


def run_race(cfg: Config, tick) -> dict:
    """Adam on the logits with each estimator, the exact expected loss recorded against steps and time."""
    out: dict = {}
    every = max(1, cfg.race_steps // 50)
    for k, p in enumerate(race_problems(cfg)):
        best = p.f(all_states(p.n, p.logits)).min().item()  # the loss of the best single state
        for name in cfg.estimators:
            est = _estimator(name).to(cfg.device)
            gen = _gen(cfg, 50 + k)
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
            out.setdefault(name, {})[p.name] = {"steps": steps, "seconds": times, "excess_loss": losses,
                                                "final_excess_loss": losses[-1]}
            tick()
    return out


# ---- report -----------------------------------------------------------------------------------------
def _fmt(x):
    if isinstance(x, float):
        if math.isinf(x) or math.isnan(x):
            return str(x)
        return f"{x:.3g}" if 1e-3 <= abs(x) < 1e5 or x == 0 else f"{x:.2e}"
    return str(x)


def growth_class(k: float) -> str:
    """The class of a fitted exponent ``k`` of relative variance against D."""
    if math.isnan(k):
        return "not fitted"
    return ("flat" if abs(k) < 0.25 else "linear" if abs(k - 1) < 0.25 else "quadratic" if abs(k - 2) < 0.3
            else "falling" if k < 0 else "power")


def growth(k: float) -> str:
    """Words for a fitted exponent ``k`` of relative variance against D."""
    c = growth_class(k)
    return {"flat": "flat in D", "linear": "about linear in D", "quadratic": "about quadratic in D",
            "falling": f"falling like D^{k:.2f}", "power": f"growing like D^{k:.2f}"}.get(c, c)


def scaling_sentence(name: str, loss: str, fit: dict) -> str:
    """One sentence about one estimator on one loss; on the separable loss, also where it ends against
    the D − 1 floor (the analytic variance of any sample-independent baseline on that loss only)."""
    k = fit["exponent"]
    worst = max(fit["relative_variance"], default=0.0)
    if worst < 1e-20:  # an enumeration: nothing but round-off to fit
        return (f"**{name}** ({loss}): no variance beyond round-off (relative variance at most {worst:.2g}) "
                f"for D up to {fit['D'][-1] if fit['D'] else 0}.")
    text = f"**{name}** ({loss}): ~D^{k:.2f}, {growth(k)}"
    if loss == "separable":
        D, top = fit["D"][-1], fit["relative_variance"][-1]
        text += f"; at D = {D} it is {top:.3g}, {top / max(D - 1, 1):.3g}× the floor D − 1"
    return text + "."


def scaling_sentences(results) -> dict[str, list[str]]:
    """Loss -> one sentence per estimator (the losses are kept apart: their exponents differ)."""
    est = results["estimators"]
    losses = next(iter(est.values()))["scaling"]
    return {loss: [scaling_sentence(n, loss, e["scaling"][loss]) for n, e in est.items()] for loss in losses}


def quick_vs_full(results) -> list[str]:
    """Where a quick run's growth with D differs from the full run's (:mod:`.compare_reference`): another
    class (flat, linear, quadratic, falling, other power) or exponents more than 0.35 apart."""
    lines, missing = [], []
    for n, e in results["estimators"].items():
        ref = FULL_RUN_EXPONENTS.get(n)
        if ref is None:
            missing.append(n)
            continue
        for loss, fit in e["scaling"].items():
            k, k_full = fit["exponent"], ref.get(loss, float("nan"))
            if growth_class(k) != growth_class(k_full) or abs(k - k_full) > 0.35:
                lines.append(f"`{n}` ({loss}): {growth(k)} here (k = {k:.2f}), {growth(k_full)} in the full "
                             f"run (k = {k_full:.2f}).")
    if missing:
        lines.append(f"No full-run reference for {', '.join(f'`{n}`' for n in missing)}: run the full study.")
    return lines


def _within(x: dict, y: dict) -> bool:
    lo, hi = y["efficiency_range"]
    return x["efficiency_range"][1] >= lo and x["efficiency_range"][0] <= hi


def _unbiased(est: dict, p: str) -> dict:
    return {n: e["problems"][p] for n, e in est.items() if e["problems"][p]["declared_unbiased"]}


def timing_findings(results) -> list[str]:
    """The findings the clock decides (kept in ``timings.json``): per problem the most efficient unbiased
    estimator per second, and who is within the noise of its timings and variance."""
    est = results["estimators"]
    lines = []
    for p in next(iter(est.values()))["problems"]:
        unb = _unbiased(est, p)
        if not unb:
            continue
        eff = max(unb, key=lambda n: unb[n]["efficiency"])
        e_lo, e_hi = unb[eff]["efficiency_range"]
        tied = [n for n in unb if n != eff and _within(unb[n], unb[eff])]
        text = (f"On **{p}**, the most efficient unbiased estimator per second is `{eff}` "
                f"({_fmt(unb[eff]['efficiency'])}, range {_fmt(e_lo)} … {_fmt(e_hi)} over "
                f"{len(unb[eff]['seconds_all'])} timings and the variance's ± 2 SE)")
        if tied:
            text += f", but {', '.join(f'`{n}`' for n in tied)} {'is' if len(tied) == 1 else 'are'} within that noise of it."
        else:
            nxt = max((n for n in unb if n != eff), key=lambda n: unb[n]["efficiency"], default=None)
            text += (f", ahead of the next, `{nxt}` ({_fmt(unb[nxt]['efficiency'])}), beyond the noise."
                     if nxt else ".")
        lines.append(text)
    return lines


def findings(results) -> list[str]:
    """The report's findings that the seed decides (kept in ``results.json``): per problem the
    lowest-variance unbiased estimator (with who is within noise of it), ``auto``'s choice, the lowest
    MSE, and whether every unbiased estimator passed. The per-second ones: :func:`timing_findings`.
    """
    est = results["estimators"]
    lines = []
    probs = next(iter(est.values()))["problems"].keys()
    for p in probs:
        unb = _unbiased(est, p)
        allp = {n: e["problems"][p] for n, e in est.items()}
        if unb:
            lo = min(unb, key=lambda n: unb[n]["variance"])
            r = unb[lo]
            tied = [n for n in unb if n != lo and unb[n]["variance"] - 2 * unb[n]["variance_se"]
                    <= r["variance"] + 2 * r["variance_se"]]
            text = (f"On **{p}**, the lowest-variance unbiased estimator is `{lo}` (variance {_fmt(r['variance'])}"
                    f" ± {_fmt(r['variance_se'])})")
            text += (f", within 2 standard errors of {', '.join(f'`{n}`' for n in tied)}" if tied else "") + "."
            lines.append(text)
        if "auto" in est and len(unb) > 1:
            per_eval = {n: r["variance"] * r["evaluations"] for n, r in unb.items() if n != "auto"}
            best = min(per_eval, key=per_eval.get)
            lines.append(f"On **{p}**, `auto` (2 f-evaluations per estimate) chose `{allp['auto']['auto_choice']}`; "
                         f"the least variance × f-evaluations measured here is `{best}`'s ({_fmt(per_eval[best])}).")
        best_mse = min(allp, key=lambda n: allp[n]["mse"])
        lines.append(f"On **{p}**, the lowest mean squared error to the exact gradient is `{best_mse}` "
                     f"({_fmt(allp[best_mse]['mse'])}).")
    failures = [(n, p) for n, e in est.items() for p, r in e["problems"].items()
                if r["declared_unbiased"] and r["max_abs_z"] >= 4]
    lines.append("Every estimator declared unbiased passed |z| < 4 on every problem." if not failures else
                 f"Declared unbiased but biased here: {failures}.")
    return lines


def _env_line(env: dict) -> str:
    keys = ("torch", "python", "threads", "cuda")  # commit and date: in results.json / timings.json
    return "Environment: " + ", ".join(f"{k} {env[k]}" for k in keys if env.get(k) is not None) + "."


def write_report(results, out_dir, plots):
    """Writes ``report.md`` in ``out_dir`` from ``results`` and the plot files."""
    est = results["estimators"]
    cfg = results["config"]
    L = ["# stochgrad compare", "",
         f"Estimators: {', '.join(est)}. Device: {cfg['device']}. Seed: {cfg['seed']}. "
         f"{'Quick run.' if cfg['quick'] else 'Full run.'} Wall time: {results['wall_seconds']:.0f} s.", "",
         _env_line(results["environment"]), "",
         "## Findings", ""]
    L += [f"- {s}" for s in results["findings"] + results["timing_findings"]]
    if cfg["quick"]:
        L += ["", "## This quick run against the full run", "",
              f"The quick run makes {cfg['scaling_warmup']} warm-up calls instead of {Config.scaling_warmup} (so REBAR, RELAX and "
              f"`learned`, which tune online, are measured less tuned) and {cfg['scaling_estimates']} estimates per "
              f"point instead of {Config.scaling_estimates}, on D = {', '.join(map(str, cfg['scaling_D']))}. Where its words for the "
              f"growth with D differ from the full run's ({REFERENCE_SOURCE}), trust the full run:", ""]
        L += [f"- {s}" for s in results["quick_vs_full"]] or ["- none: the same conclusions."]
    L += ["", "## How variance scales with the number of stochastic units (seed §5)", "",
          "Relative variance = Σ_i Var(ĝ_i) / ‖∇E[L]‖², one sample per estimate (two for `reinforce_loo`), "
          f"all logits equal to 1, exact gradients in closed form; estimators with state first make "
          f"{cfg['scaling_warmup']} warm-up calls (baselines settle, REBAR/RELAX/learned tune). Exponent k: "
          "least-squares slope of log relative variance on log D for D ≥ 4. Two losses, kept apart: "
          "**separable** Σ_i (b_i − 0.45)², where each other unit only adds its own variance, so any baseline "
          "that ignores the current sample has relative variance D − 1 at best (the floor); **coupled** "
          "(Σ_i b_i − 0.45 D)² / D, where every unit interacts with every other.", ""]
    for loss, sentences in scaling_sentences(results).items():
        L += [f"### {loss} loss", ""] + [f"- {s}" for s in sentences] + [""]
    losses = list(next(iter(est.values()))["scaling"].keys())
    L += ["| estimator | " + " | ".join(f"k ({l})" for l in losses) +
          " | " + " | ".join(f"rel. var. D={d} ({losses[0]})" for d in (cfg["scaling_D"][0], cfg["scaling_D"][-1])) + " |",
          "|---|" + "---|" * (len(losses) + 2)]
    for n, e in est.items():
        s = e["scaling"]
        L.append(f"| {n} | " + " | ".join(_fmt(s[l]["exponent"]) for l in losses) + " | " +
                 f"{_fmt(s[losses[0]]['relative_variance'][0])} | {_fmt(s[losses[0]]['relative_variance'][-1])} |")
    L += ["", f"![variance against D]({plots['scaling']})", "",
          "Top row: estimators declared unbiased (solid lines, filled markers); bottom row: biased ones "
          "(dashed lines, open markers). Legend: exponent k on the separable / coupled loss.", ""]
    L += ["## Bias, variance and cost on problems with exact gradients", "",
          "bias: ‖mean − exact‖ (± the norm of its per-coordinate standard errors); max |z| per coordinate; "
          "variance: Σ_i Var(ĝ_i) of one estimate (± its standard error); time: median seconds per estimate "
          f"over {cfg['timing_repeats']} timings (interleaved across estimators, one call on 500 replicas each; "
          "min … max in brackets); efficiency: 1/(variance × median time).", ""]
    for p in next(iter(est.values()))["problems"]:
        L += [f"### {p}", "", "| estimator | unbiased? | bias (± se) | max abs z | variance (± se) | rel. var. | "
              "MSE | µs / estimate [min … max] | f evals | efficiency | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for n, e in est.items():
            r = e["problems"][p]
            L.append(f"| {n} | {'yes' if r['declared_unbiased'] else 'no'} | {_fmt(r['bias_norm'])} ± "
                     f"{_fmt(r['bias_se_norm'])} | {_fmt(r['max_abs_z'])} | {_fmt(r['variance'])} ± "
                     f"{_fmt(r['variance_se'])} | {_fmt(r['relative_variance'])} | {_fmt(r['mse'])} | "
                     f"{_fmt(1e6 * r['seconds_per_estimate'])} [{_fmt(1e6 * r['seconds_min'])} … "
                     f"{_fmt(1e6 * r['seconds_max'])}] | {r['evaluations']} | {_fmt(r['efficiency'])} | {r['verdict']} |")
        L.append("")
    L += [f"![bias against variance]({plots['bias_variance']})", "",
          "Filled circles: estimators declared unbiased, whose ‖bias‖ is only Monte-Carlo noise (it should sit "
          "within about one standard error of zero); open squares: estimators declared biased. Bars: ± one "
          "standard error of ‖bias‖ (vertical) and of the variance (horizontal); a bar that would reach zero is cut "
          "at a tenth of the value (log axes). Colours are those of the other plots.", "",
          "## Optimisation race", "",
          f"Adam (lr 0.05) on the logits of {cfg['race_units']} units from σ = ½, {cfg['race_steps']} steps, "
          "one estimate per step; the curve is the exact expected loss minus the loss of the best state. The "
          "time axis is one run's clock: read it for orders of magnitude, the table above for timing spread.", "",
          "| estimator | " + " | ".join(f"final excess loss ({p})" for p in next(iter(est.values()))["race"]) + " |",
          "|---|" + "---|" * len(next(iter(est.values()))["race"])]
    for n, e in est.items():
        L.append(f"| {n} | " + " | ".join(_fmt(r["final_excess_loss"]) for r in e["race"].values()) + " |")
    L += ["", f"![race]({plots['race']})", ""]
    with open(os.path.join(out_dir, "report.md"), "w") as fh:
        fh.write("\n".join(L))


MARKERS = "osD^vP*Xhp"   # unbiased from "o", biased from "s"; the next one for a group's eleventh member


def styles(results) -> dict[str, dict]:
    """Matplotlib style per estimator, the same on every plot: unbiased ones solid with filled markers,
    biased ones dashed with open markers; colours from the 10 distinct of ``tab10`` within each group,
    the marker changing when a group has more than ten."""
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10").colors
    out, count = {}, {True: 0, False: 0}
    for n, e in results["estimators"].items():
        u = bool(e["declared_unbiased"])
        i = count[u]
        count[u] += 1
        c = colours[i % 10]
        marker = MARKERS[(i // 10 + (0 if u else 1)) % len(MARKERS)]
        out[n] = dict(color=c, linestyle="-" if u else "--", marker=marker,
                      markerfacecolor=c if u else "none", markeredgecolor=c)
    return out


def plot(results, out_dir) -> dict:
    """Writes the three plots into ``out_dir``; returns their file names by kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    est = results["estimators"]
    names = list(est)
    style = styles(results)
    groups = [("declared unbiased", [n for n in names if est[n]["declared_unbiased"]]),
              ("biased", [n for n in names if not est[n]["declared_unbiased"]])]
    groups = [g for g in groups if g[1]]
    files = {}

    losses = list(next(iter(est.values()))["scaling"])
    fig, axes = plt.subplots(len(groups), len(losses), figsize=(5.2 * len(losses) + 3.2, 4.2 * len(groups)),
                             squeeze=False, sharex=True)
    for row, (title, members) in enumerate(groups):
        for col, loss in enumerate(losses):
            ax = axes[row][col]
            for n in members:
                s = est[n]["scaling"][loss]
                pts = [(d, v) for d, v in zip(s["D"], s["relative_variance"]) if v > 0]
                if pts:
                    ks = " / ".join(f"{est[n]['scaling'][l]['exponent']:.2f}" for l in losses)
                    ax.loglog(*zip(*pts), ms=4, lw=1.4, label=f"{n}  (k {ks})", **style[n])
            if loss == "separable":
                D = est[names[0]]["scaling"][loss]["D"]
                ax.loglog(D[1:], [d - 1 for d in D[1:]], color="k", lw=1.2, linestyle=":", zorder=5,
                          label="D − 1 (separable): floor of any sample-independent baseline")
            ax.set_ylabel("relative variance")
            ax.set_title(f"{loss} loss: {title}")
            ax.grid(True, which="both", alpha=0.3)
            if row == len(groups) - 1:
                ax.set_xlabel("units D")
        handles, labels = [], []
        for ax in axes[row]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        axes[row][-1].legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5),
                             title=f"k: {' / '.join(losses)}", title_fontsize=7)
    if results["config"]["quick"]:
        fig.suptitle("quick run: where its growth with D differs from the full run's, report.md says so", fontsize=9)
    files["scaling"] = "variance_vs_units.png"
    save_figure(fig, axes[0], os.path.join(out_dir, files["scaling"]))

    probs = list(next(iter(est.values()))["problems"])
    cols = min(2, len(probs))
    rows = -(-len(probs) // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(5.0 * cols + 2.8, 4.2 * rows), squeeze=False)
    axes = [[ax for row in grid for ax in row]]
    for ax in axes[0][len(probs):]:
        ax.set_visible(False)
    for ax, p in zip(axes[0], probs):
        for n in names:
            r = est[n]["problems"][p]
            x, y = max(r["variance"], 1e-12), max(r["bias_norm"], 1e-6)
            xe, ye = r["variance_se"] if math.isfinite(r["variance_se"]) else 0.0, r["bias_se_norm"]
            st = style[n]
            ax.errorbar(x, y, xerr=[[min(xe, 0.9 * x)], [xe]], yerr=[[min(ye, 0.9 * y)], [ye]],
                        marker="o" if r["declared_unbiased"] else "s", ms=6, color=st["color"],
                        markerfacecolor=st["color"] if r["declared_unbiased"] else "none",
                        elinewidth=0.8, capsize=2, linestyle="none", label=n)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("variance of one estimate")
        ax.set_ylabel("‖mean − exact‖")
        ax.set_title(p)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    key = [Line2D([], [], marker="o", color="grey", linestyle="none", label="filled: declared unbiased (‖bias‖ is noise)"),
           Line2D([], [], marker="s", color="grey", markerfacecolor="none", linestyle="none",
                  label="open: declared biased"),
           Line2D([], [], color="grey", lw=0.8, label="bars: ± 1 standard error")]
    grid[0][-1].legend(key + handles, [h.get_label() for h in key] + labels, fontsize=7, loc="upper left",
                       bbox_to_anchor=(1.02, 1.0))
    files["bias_variance"] = "bias_vs_variance.png"
    save_figure(fig, axes[0], os.path.join(out_dir, files["bias_variance"]))

    races = list(next(iter(est.values()))["race"])
    fig, axes = plt.subplots(2, len(races), figsize=(5.2 * len(races) + 2.6, 8), squeeze=False)
    for j, p in enumerate(races):
        for n in names:
            r = est[n]["race"][p]
            y = [max(v, 1e-8) for v in r["excess_loss"]]
            line = dict(color=style[n]["color"], linestyle=style[n]["linestyle"], lw=1.4)
            axes[0][j].semilogy(r["steps"], y, label=n, **line)
            timed = [(t, v) for t, v in zip(r["seconds"], y) if t > 0]
            if timed:
                axes[1][j].loglog(*zip(*timed), label=n, **line)
        axes[0][j].set_title(f"race on {p}: against steps")
        axes[1][j].set_title(f"race on {p}: against wall time (one run)")
        axes[0][j].set_xlabel("step")
        axes[1][j].set_xlabel("seconds (estimator + optimiser only)")
        for i in range(2):
            axes[i][j].set_ylabel("E[L] − best state's L")
            axes[i][j].grid(True, which="both", alpha=0.3)
    files["race"] = "race.png"
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5),
                       title="solid: unbiased, dashed: biased", title_fontsize=7)
    save_figure(fig, axes[0], os.path.join(out_dir, files["race"]))
    return files


def run(cfg: Config, out_dir: str, progress: bool = True) -> dict:
    """Runs the whole study and writes ``report.md``, the JSON files (:func:`write_results`) and the plots
    to ``out_dir``; returns the results with their timings (as ``report.md`` shows them)."""
    from tqdm import tqdm

    cfg.validate()
    FOLDER.check(out_dir, "out_dir")
    os.makedirs(out_dir, exist_ok=True)
    n_est = len(cfg.estimators)
    total = n_est * (len(P.suite()) + 2 * len(cfg.scaling_D) + len(race_problems(cfg)))
    bar = tqdm(total=total, desc="compare", unit="task", disable=not progress)
    t0 = time.perf_counter()
    tick = bar.update
    problems = measure_problems(cfg, tick)
    scaling = measure_scaling(cfg, tick)
    race = run_race(cfg, tick)
    from .compare_categorical import measure_categorical, categorical_report  # the categorical units' part
    categorical = measure_categorical(cfg, tick)
    bar.close()
    results = {"config": {**cfg.__dict__, "estimators": list(cfg.estimators), "scaling_D": list(cfg.scaling_D)},
               "environment": environment(),
               "estimators": {n: {"declared_unbiased": REGISTRY[n].unbiased, "cost": REGISTRY[n].cost,
                                  "problems": problems[n], "scaling": scaling[n], "race": race[n]}
                              for n in cfg.estimators},
               "wall_seconds": time.perf_counter() - t0}
    results["findings"] = findings(results)
    results["timing_findings"] = timing_findings(results)
    by_loss = scaling_sentences(results)
    results["scaling_sentences"] = [s for sentences in by_loss.values() for s in sentences]
    results["quick_vs_full"] = quick_vs_full(results) if cfg.quick else []
    plots = plot(results, out_dir)
    write_report(results, out_dir, plots)
    categorical_report(categorical, cfg, out_dir)   # appends its section to report.md, adds its plot
    write_results(out_dir, results, categorical)
    results["categorical"] = categorical
    return results
