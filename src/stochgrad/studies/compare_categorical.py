"""The categorical part of ``stochgrad compare``: every estimator that supports categorical
units, on the categorical problems (bias, variance, cost against exact enumeration) and on how the
variance grows with the number of units ``n`` and with the number of classes ``K``.

Scaling losses with closed-form expectations (one-hot ``h_i``, class values ``w_k = k/(K−1)``, all
units with the same logits ``linspace(−1, 1, K)``): *separable* ``Σ_i (w·h_i − t)²`` and *coupled*
``(Σ_i w·h_i − t·n)² / n``; their exact gradients come from autograd through the closed form.
Writes a section appended to ``report.md`` and ``categorical_scaling.png``; ``compare.write_results`` writes
``results_categorical.json`` (and its timings into ``timings.json``).
"""
from __future__ import annotations

import math
import os

import torch

from .. import problems as P
from ..checks import sample_gradients
from ..estimators import REGISTRY, get_estimator
from .training import save_figure

TARGET = 0.45


def names(cfg) -> list[str]:
    """The configured estimators that support categorical units (``exact`` aside)."""
    return [n for n in cfg.estimators if n != "exact" and "categorical" in REGISTRY[n].distributions]


def scaling_losses(K: int):
    """``{name: (f, expected)}``: ``f`` on one-hot ``(..., n, K)``, ``expected(logits (n, K))`` in closed form."""
    def w(like):
        return torch.linspace(0, 1, K, dtype=like.dtype, device=like.device)

    def separable(h):
        return ((h * w(h)).sum(-1) - TARGET).square().sum(-1)

    def separable_mean(a):
        p = a.softmax(-1)
        return (p * (w(a) - TARGET).square()).sum()

    def coupled(h):
        n = h.shape[-2]
        return ((h * w(h)).sum((-2, -1)) - TARGET * n).square() / n

    def coupled_mean(a):  # E (S − tn)² / n = (Σ Var_i + (Σ μ_i − tn)²) / n
        n, p, v = a.shape[-2], a.softmax(-1), w(a)
        mu, second = (p * v).sum(-1), (p * v * v).sum(-1)
        return ((second - mu.square()).sum() + (mu.sum() - TARGET * n).square()) / n

    return {"separable": (separable, separable_mean), "coupled": (coupled, coupled_mean)}


def relative_variance(cfg, name, n, K, loss, salt) -> float:
    """Relative variance of estimator ``name`` on ``n`` categorical units of ``K`` classes, on the
    scaling loss ``loss`` of :func:`scaling_losses`.
    """
    f, mean = scaling_losses(K)[loss]
    a = torch.linspace(-1, 1, K, dtype=torch.float64, device=cfg.device).expand(n, K).contiguous()
    x = a.clone().requires_grad_(True)
    (exact,) = torch.autograd.grad(mean(x), x)
    est = get_estimator(name, **({"cost": "evaluations"} if name == "auto" else {})).to(cfg.device)  # repeatable
    estimates = min(cfg.scaling_estimates, 300) if cfg.quick else cfg.scaling_estimates
    batch = min(estimates, max(1, 200000 // (n * K)))
    stateful = any(True for _ in est.buffers()) or any(True for _ in est.parameters())
    g = sample_gradients(est, f, a, estimates, batch, max(1, est.min_samples),
                         torch.Generator(device=cfg.device).manual_seed(cfg.seed * 1000 + salt),
                         warmup=cfg.scaling_warmup if stateful else 0, distribution="categorical")
    return (g.var(0).sum() / exact.square().sum()).item()


def fit(xs, ys) -> float:
    """Least-squares slope of log y on log x (points with y > 0, x >= 2)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x >= 2 and y > 0]
    if len(pts) < 2:
        return float("nan")
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def measure_categorical(cfg, tick) -> dict:
    """``{"problems": …, "units": …, "classes": …}`` for every categorical-capable estimator."""
    from .compare import measure_problems

    est = names(cfg)
    if not est:
        return {}
    problems = measure_problems(cfg, tick, P.categorical_suite(device=cfg.device), est)
    units = (1, 4, 16) if cfg.quick else (1, 2, 4, 8, 16, 32, 64, 128, 256)
    classes = (2, 4, 16) if cfg.quick else (2, 3, 4, 8, 16, 32, 64)
    out = {"problems": problems, "units": {}, "classes": {}, "units_K": 10, "classes_n": 8}
    for name in est:
        for loss in ("separable", "coupled"):
            rv = [relative_variance(cfg, name, n, 10, loss, 11) for n in units]
            out["units"].setdefault(name, {})[loss] = {"n": list(units), "relative_variance": rv,
                                                       "exponent": fit(units, rv)}
            rk = [relative_variance(cfg, name, 8, K, loss, 13) for K in classes]
            out["classes"].setdefault(name, {})[loss] = {"K": list(classes), "relative_variance": rk,
                                                         "exponent": fit(classes, rk)}
            tick()
    return out


def _f(x):
    return f"{x:.3g}" if isinstance(x, float) and math.isfinite(x) else str(x)


def categorical_report(res: dict, cfg, out_dir: str) -> None:
    """Appends the categorical section to ``report.md`` and writes its plot (``compare.write_results``
    writes its JSON)."""
    if not res:
        return
    est = list(res["units"])
    L = ["", "## Categorical units (one of K classes)", "",
         f"Estimators that support one-hot categorical units: {', '.join(est)}. Problems: n = 3 units of K = 4 "
         "classes, exact gradients by enumerating the 64 states; columns as above.", ""]
    for p in next(iter(res["problems"].values())):
        L += [f"### {p}", "", "| estimator | unbiased? | bias (± se) | max abs z | variance | MSE | µs / estimate | "
              "f evals | verdict |", "|---|---|---|---|---|---|---|---|---|"]
        for n in est:
            r = res["problems"][n][p]
            L.append(f"| {n} | {'yes' if r['declared_unbiased'] else 'no'} | {_f(r['bias_norm'])} ± "
                     f"{_f(r['bias_se_norm'])} | {_f(r['max_abs_z'])} | {_f(r['variance'])} | {_f(r['mse'])} | "
                     f"{_f(1e6 * r['seconds_per_estimate'])} | {r['evaluations']} | {r['verdict']} |")
        L.append("")
    L += [f"Relative variance Σ Var(ĝ) / ‖∇E[L]‖² against the number of units n (K = {res['units_K']}) and "
          f"against the number of classes K (n = {res['classes_n']}); exponent: slope of log relative variance "
          "on log n (log K), points ≥ 2.", "",
          "| estimator | exponent in n (separable) | exponent in n (coupled) | exponent in K (separable) | "
          "exponent in K (coupled) |", "|---|---|---|---|---|"]
    for n in est:
        u, c = res["units"][n], res["classes"][n]
        L.append(f"| {n} | {_f(u['separable']['exponent'])} | {_f(u['coupled']['exponent'])} | "
                 f"{_f(c['separable']['exponent'])} | {_f(c['coupled']['exponent'])} |")
    L += ["", "![categorical scaling](categorical_scaling.png)", ""]
    with open(os.path.join(out_dir, "report.md"), "a") as fh:
        fh.write("\n".join(L))
    _plot(res, os.path.join(out_dir, "categorical_scaling.png"))


def _plot(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    est = list(res["units"])
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5), squeeze=False)
    for j, loss in enumerate(("separable", "coupled")):
        for i, (key, axis) in enumerate((("units", "n"), ("classes", "K"))):
            ax = axes[i][j]
            for k, name in enumerate(est):
                s = res[key][name][loss]
                pts = [(x, v) for x, v in zip(s[axis], s["relative_variance"]) if v > 0]
                if pts:
                    ax.loglog(*zip(*pts), "o-", ms=3, color=cmap(k % 10), label=f"{name} ({s['exponent']:.2f})")
            ax.set_xlabel(f"{'units n' if axis == 'n' else 'classes K'}")
            ax.set_ylabel("relative variance")
            ax.set_title(f"{loss} loss, against {axis}")
            ax.grid(True, which="both", alpha=0.3)
    save_figure(fig, axes[0], path, legend=True)
