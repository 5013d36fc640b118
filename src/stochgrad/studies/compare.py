"""``stochgrad compare``: bias, variance and cost of every estimator, and how variance scales with the
number of independent noise sources (the question seed §5 leaves open).

Three parts, all against exact gradients:

1. **Problems** (:func:`stochgrad.problems.suite`): bias with its standard error, variance, MSE, wall time
   per estimate, evaluations of ``f``, efficiency ``1 / (variance × time)``.
2. **Scaling**: relative variance ``Σ_i Var(ĝ_i) / ‖∇‖²`` against the number of units ``D`` (1 … 1024)
   on two quadratic losses with closed-form gradients (all logits equal), a fitted exponent per
   estimator and loss, one sentence each.
3. **Race**: Adam on the logits from the same start, the exact expected loss against steps and time.

Outputs ``report.md``, ``results.json`` (keyed by estimator) and PNG plots in ``--out``.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass

import torch

from .. import problems as P
from ..checks import check_unbiased, sample_gradients
from ..estimators import REGISTRY, get_estimator
from ..exact import all_states, exact_expectation
from ..runinfo import write_json
from .training import save_figure


@dataclass
class Config:
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

    @classmethod
    def make(cls, quick=False, estimators=None, device="cpu", seed=0, **over):
        names = tuple(estimators) if estimators else tuple(n for n in REGISTRY if n != "exact")
        base = dict(problem_estimates=2000, scaling_D=(1, 4, 16, 64, 256, 1024), scaling_estimates=300,
                    scaling_warmup=10, race_steps=150) if quick else {}
        base.update(over)
        return cls(quick=quick, estimators=names, device=device, seed=seed, **base)


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _samples(name):
    return max(1, REGISTRY[name].min_samples)


def _gen(cfg, salt=0):
    return torch.Generator(device=cfg.device).manual_seed(cfg.seed * 1000 + salt)


# ---- 1. problems ------------------------------------------------------------------------------------
def measure_problems(cfg: Config, tick) -> dict:
    out: dict = {}
    for k, p in enumerate(P.suite(device=cfg.device)):
        for name in cfg.estimators:
            est = get_estimator(name).to(cfg.device)
            batch = min(500, cfg.problem_estimates)
            r = check_unbiased(est, p.f, p.logits, estimates=cfg.problem_estimates, batch=batch,
                               samples=_samples(name), generator=_gen(cfg, k), warmup=10)
            # wall time per estimate, vectorised over a batch of replicas
            a = p.logits.expand(batch, -1)
            _sync(cfg.device)
            t0 = time.perf_counter()
            sample_gradients(est, p.f, a[0], batch, batch, _samples(name), _gen(cfg, 99))
            _sync(cfg.device)
            seconds = (time.perf_counter() - t0) / batch
            variance = r.variance.sum().item()
            out.setdefault(name, {})[p.name] = {
                "bias_norm": r.bias.norm().item(), "bias_se_norm": r.standard_error.norm().item(),
                "max_abs_z": r.max_abs_z, "variance": variance, "relative_variance": r.relative_variance,
                "mse": r.mse, "seconds_per_estimate": seconds,
                "evaluations": est.evaluations(p.n, _samples(name)),
                "efficiency": 1.0 / (variance * seconds) if variance > 0 else math.inf,
                "declared_unbiased": r.declared_unbiased, "verdict": r.verdict, "n": p.n}
            tick()
    return out


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
    out: dict = {}
    for lk, (loss, (f, grad_fn)) in enumerate(scaling_losses().items()):
        for name in cfg.estimators:
            Ds, rel = [], []
            for D in cfg.scaling_D:
                a = torch.full((D,), logit, dtype=torch.float64, device=cfg.device)
                exact = grad_fn(a)
                est = get_estimator(name).to(cfg.device)
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
    n = cfg.race_units
    toy = P.separable(n, logits=0.0, device=cfg.device)
    dec = P.decoder(n=n, d=3 * n, seed=4, device=cfg.device)
    dec.logits = torch.zeros_like(dec.logits)
    return [toy, dec]


def run_race(cfg: Config, tick) -> dict:
    out: dict = {}
    every = max(1, cfg.race_steps // 50)
    for k, p in enumerate(race_problems(cfg)):
        best = p.f(all_states(p.n, p.logits)).min().item()  # the loss of the best single state
        for name in cfg.estimators:
            est = get_estimator(name).to(cfg.device)
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


def scaling_sentence(name, fits) -> str:
    """One sentence: the fitted growth per loss, and where the separable loss ends against the D − 1 floor."""
    parts = [f"~D^{fit['exponent']:.2f} on the {loss} loss" for loss, fit in fits.items()]
    sep = fits.get("separable", next(iter(fits.values())))
    k, D, top = sep["exponent"], sep["D"][-1], sep["relative_variance"][-1]
    kind = ("about linear in D" if abs(k - 1) < 0.25 else "about quadratic in D" if abs(k - 2) < 0.3 else
            "flat in D" if abs(k) < 0.25 else f"a power {k:.2f} of D")
    return (f"**{name}**: relative variance grows {' and '.join(parts)}, {kind}; at D = {D} on the separable "
            f"loss it is {top:.3g}, {top / max(D - 1, 1):.3g}× the floor D − 1 of any sample-independent baseline.")


def findings(results) -> list[str]:
    est = results["estimators"]
    lines = []
    probs = next(iter(est.values()))["problems"].keys()
    for p in probs:
        unb = {n: e["problems"][p] for n, e in est.items() if e["problems"][p]["declared_unbiased"]}
        allp = {n: e["problems"][p] for n, e in est.items()}
        if unb:
            lo = min(unb, key=lambda n: unb[n]["variance"])
            eff = max(unb, key=lambda n: unb[n]["efficiency"])
            lines.append(f"On **{p}**, the lowest-variance unbiased estimator is `{lo}` (variance "
                         f"{_fmt(unb[lo]['variance'])}); the most efficient per second is `{eff}`.")
        best_mse = min(allp, key=lambda n: allp[n]["mse"])
        lines.append(f"On **{p}**, the lowest mean squared error to the exact gradient is `{best_mse}` "
                     f"({_fmt(allp[best_mse]['mse'])}).")
    failures = [(n, p) for n, e in est.items() for p, r in e["problems"].items()
                if r["declared_unbiased"] and r["max_abs_z"] >= 4]
    lines.append("Every estimator declared unbiased passed |z| < 4 on every problem." if not failures else
                 f"Declared unbiased but biased here: {failures}.")
    return lines


def write_report(results, out_dir, plots):
    est = results["estimators"]
    cfg = results["config"]
    L = ["# stochgrad compare", "",
         f"Estimators: {', '.join(est)}. Device: {cfg['device']}. Seed: {cfg['seed']}. "
         f"{'Quick run.' if cfg['quick'] else 'Full run.'} Wall time: {results['wall_seconds']:.0f} s.", "",
         "## Findings", ""]
    L += [f"- {s}" for s in results["findings"]]
    L += ["", "## How variance scales with the number of stochastic units (seed §5)", "",
          "Relative variance = Σ_i Var(ĝ_i) / ‖∇E[L]‖², one sample per estimate (two for `reinforce_loo`), "
          f"all logits equal to 1, exact gradients in closed form; estimators with state first make "
          f"{cfg['scaling_warmup']} warm-up calls (baselines settle, REBAR/RELAX/learned tune). Exponent: least-squares slope of "
          "log relative variance on log D for D ≥ 4.", ""]
    L += [f"- {s}" for s in results["scaling_sentences"]]
    losses = list(next(iter(est.values()))["scaling"].keys())
    L += ["", "| estimator | " + " | ".join(f"exponent ({l})" for l in losses) +
          " | " + " | ".join(f"rel. var. D={d} ({losses[0]})" for d in (cfg["scaling_D"][0], cfg["scaling_D"][-1])) + " |",
          "|---|" + "---|" * (len(losses) + 2)]
    for n, e in est.items():
        s = e["scaling"]
        L.append(f"| {n} | " + " | ".join(_fmt(s[l]["exponent"]) for l in losses) + " | " +
                 f"{_fmt(s[losses[0]]['relative_variance'][0])} | {_fmt(s[losses[0]]['relative_variance'][-1])} |")
    L += ["", f"![variance against D]({plots['scaling']})", ""]
    L += ["## Bias, variance and cost on problems with exact gradients", "",
          "bias: ‖mean − exact‖ (± its standard error); max |z| per coordinate; variance: Σ_i Var(ĝ_i) of one "
          "estimate; time: seconds per estimate, vectorised over 500 replicas; efficiency: 1/(variance × time).", ""]
    for p in next(iter(est.values()))["problems"]:
        L += [f"### {p}", "", "| estimator | unbiased? | bias (± se) | max abs z | variance | rel. var. | MSE | "
              "µs / estimate | f evals | efficiency | verdict |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for n, e in est.items():
            r = e["problems"][p]
            L.append(f"| {n} | {'yes' if r['declared_unbiased'] else 'no'} | {_fmt(r['bias_norm'])} ± "
                     f"{_fmt(r['bias_se_norm'])} | {_fmt(r['max_abs_z'])} | {_fmt(r['variance'])} | "
                     f"{_fmt(r['relative_variance'])} | {_fmt(r['mse'])} | {_fmt(1e6 * r['seconds_per_estimate'])} | "
                     f"{r['evaluations']} | {_fmt(r['efficiency'])} | {r['verdict']} |")
        L.append("")
    L += [f"![bias against variance]({plots['bias_variance']})", "",
          "## Optimisation race", "",
          f"Adam (lr 0.05) on the logits of {cfg['race_units']} units from σ = ½, {cfg['race_steps']} steps, "
          "one estimate per step; the curve is the exact expected loss minus the loss of the best state.", "",
          "| estimator | " + " | ".join(f"final excess loss ({p})" for p in next(iter(est.values()))["race"]) + " |",
          "|---|" + "---|" * len(next(iter(est.values()))["race"])]
    for n, e in est.items():
        L.append(f"| {n} | " + " | ".join(_fmt(r["final_excess_loss"]) for r in e["race"].values()) + " |")
    L += ["", f"![race]({plots['race']})", ""]
    with open(os.path.join(out_dir, "report.md"), "w") as fh:
        fh.write("\n".join(L))


def plot(results, out_dir) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    est = results["estimators"]
    names = list(est)
    cmap = plt.get_cmap("tab20")
    color = {n: cmap(i % 20) for i, n in enumerate(names)}
    files = {}

    losses = list(next(iter(est.values()))["scaling"])
    fig, axes = plt.subplots(1, len(losses), figsize=(6 * len(losses), 4.8), squeeze=False)
    for ax, loss in zip(axes[0], losses):
        for n in names:
            s = est[n]["scaling"][loss]
            pts = [(d, v) for d, v in zip(s["D"], s["relative_variance"]) if v > 0]
            if pts:
                ax.loglog(*zip(*pts), "o-", ms=3, color=color[n], label=f"{n} (k={s['exponent']:.2f})")
        D = est[names[0]]["scaling"][loss]["D"]
        ax.loglog(D[1:], [d - 1 for d in D[1:]], "k--", lw=1, label="D − 1 floor (separable)")
        ax.set_xlabel("units D")
        ax.set_ylabel("relative variance")
        ax.set_title(f"{loss} loss")
        ax.grid(True, which="both", alpha=0.3)
    files["scaling"] = "variance_vs_units.png"
    save_figure(fig, axes[0], os.path.join(out_dir, files["scaling"]), legend=True)

    probs = list(next(iter(est.values()))["problems"])
    fig, axes = plt.subplots(1, len(probs), figsize=(4.5 * len(probs), 4.2), squeeze=False)
    for ax, p in zip(axes[0], probs):
        for n in names:
            r = est[n]["problems"][p]
            ax.scatter(max(r["variance"], 1e-12), max(r["bias_norm"], 1e-6), color=color[n],
                       marker="o" if r["declared_unbiased"] else "x", label=n)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("variance of one estimate")
        ax.set_ylabel("‖bias‖ (unbiased: noise floor)")
        ax.set_title(p)
        ax.grid(True, which="both", alpha=0.3)
    files["bias_variance"] = "bias_vs_variance.png"
    save_figure(fig, axes[0], os.path.join(out_dir, files["bias_variance"]), legend=True)

    races = list(next(iter(est.values()))["race"])
    fig, axes = plt.subplots(2, len(races), figsize=(6 * len(races), 8), squeeze=False)
    for j, p in enumerate(races):
        for n in names:
            r = est[n]["race"][p]
            y = [max(v, 1e-8) for v in r["excess_loss"]]
            axes[0][j].semilogy(r["steps"], y, color=color[n], label=n)
            timed = [(t, v) for t, v in zip(r["seconds"], y) if t > 0]
            if timed:
                axes[1][j].loglog(*zip(*timed), color=color[n], label=n)
        axes[0][j].set_title(f"race on {p}: against steps")
        axes[1][j].set_title(f"race on {p}: against wall time")
        axes[0][j].set_xlabel("step")
        axes[1][j].set_xlabel("seconds (estimator + optimiser only)")
        for i in range(2):
            axes[i][j].set_ylabel("E[L] − best state's L")
            axes[i][j].grid(True, which="both", alpha=0.3)
    files["race"] = "race.png"
    save_figure(fig, axes[0], os.path.join(out_dir, files["race"]), legend=True)
    return files


def run(cfg: Config, out_dir: str, progress: bool = True) -> dict:
    """Runs the whole study and writes ``report.md``, ``results.json`` and the plots to ``out_dir``."""
    from tqdm import tqdm

    os.makedirs(out_dir, exist_ok=True)
    n_est = len(cfg.estimators)
    total = n_est * (len(P.suite()) + 2 * len(cfg.scaling_D) + len(race_problems(cfg)))
    bar = tqdm(total=total, desc="compare", unit="task", disable=not progress)
    t0 = time.perf_counter()
    tick = bar.update
    problems = measure_problems(cfg, tick)
    scaling = measure_scaling(cfg, tick)
    race = run_race(cfg, tick)
    bar.close()
    results = {"config": {**cfg.__dict__, "estimators": list(cfg.estimators), "scaling_D": list(cfg.scaling_D)},
               "estimators": {n: {"declared_unbiased": REGISTRY[n].unbiased, "cost": REGISTRY[n].cost,
                                  "problems": problems[n], "scaling": scaling[n], "race": race[n]}
                              for n in cfg.estimators},
               "wall_seconds": time.perf_counter() - t0}
    results["findings"] = findings(results)
    results["scaling_sentences"] = [scaling_sentence(n, e["scaling"]) for n, e in results["estimators"].items()]
    plots = plot(results, out_dir)
    write_json(os.path.join(out_dir, "results.json"), results, default=float)
    write_report(results, out_dir, plots)
    return results
