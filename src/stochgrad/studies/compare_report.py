"""What ``stochgrad compare`` says about its measurements: the findings in words, ``report.md`` and the plots.

Every verdict compares estimators at **equal f-evaluations** (variance × f-evaluations per estimate: the
variance of the mean of as many estimates as the same number of evaluations of ``f`` buys; ``auto``'s
measuring calls count) or states the budget in the sentence; the per-second verdicts
([`timing_findings`][stochgrad.studies.compare_report.timing_findings]) name the estimators within the noise of the winner. Works on results as
[`stochgrad.studies.compare.assemble`][stochgrad.studies.compare.assemble] builds them, finished or not: a part not yet measured is left out and
listed.
"""
from __future__ import annotations

import math
import os

from ..estimators import REGISTRY
from ..files import save_figure_atomic, write_atomic
from .compare_reference import FULL_RUN_EXPONENTS, SOURCE as REFERENCE_SOURCE


def fit_exponent(xs, values, min_x: int = 4) -> float:
    """Least-squares slope of log(value) on log(x) over ``x >= min_x`` (the large-size growth rate)."""
    pts = [(math.log(d), math.log(v)) for d, v in zip(xs, values) if d >= min_x and v > 0]
    if len(pts) < 2:
        return float("nan")
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


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
    """One sentence about one estimator on one loss; on the separable loss also where it ends at equal
    f-evaluations, against D − 1 (the least relative variance of one sample with a scalar baseline that ignores
    it: the analytic result on that loss only)."""
    k = fit["exponent"]
    worst = max(fit["relative_variance"], default=0.0)
    if worst < 1e-20:  # an enumeration: nothing but round-off to fit
        return (f"**{name}** ({loss}): no variance beyond round-off (relative variance at most {worst:.2g}) "
                f"for D up to {fit['D'][-1] if fit['D'] else 0}.")
    text = f"**{name}** ({loss}): ~D^{k:.2f}, {growth(k)}"
    if loss == "separable" and fit["D"]:
        D, top = fit["D"][-1], fit["relative_variance"][-1]
        evals = (fit.get("evaluations") or [1])[-1]
        per = top * evals
        text += (f"; at D = {D}, relative variance {top:.3g} with {evals} f-evaluation{'s' if evals != 1 else ''} "
                 f"per estimate: {per / max(D - 1, 1):.3g} (D − 1) at equal f-evaluations")
    return text + "."


def scaling_sentences(results) -> dict[str, list[str]]:
    """Loss -> one sentence per estimator (the losses are kept apart: their exponents differ)."""
    est = results["estimators"]
    losses = [loss for loss in ("separable", "coupled") if any(loss in e["scaling"] for e in est.values())]
    return {loss: [scaling_sentence(n, loss, e["scaling"][loss]) for n, e in est.items() if loss in e["scaling"]]
            for loss in losses}


def quick_vs_full(results) -> list[str]:
    """Where a quick run's growth with D differs from the full run's ([`compare_reference`][stochgrad.studies.compare_reference]): another
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
    return {n: e["problems"][p] for n, e in est.items() if p in e["problems"] and e["problems"][p]["declared_unbiased"]}


def _problem_names(est: dict) -> list[str]:
    names: list[str] = []
    for e in est.values():
        names += [p for p in e["problems"] if p not in names]
    return names


def spent(r: dict) -> float:
    """f-evaluations per estimate, all counted: ``auto``'s measuring calls on top of its chosen estimator's."""
    return r["evaluations"] / (1.0 - r.get("measuring_fraction", 0.0))


def _evals(r: dict) -> str:
    e = r["evaluations"]
    words = f"{e} f-evaluation{'s' if e != 1 else ''} per estimate"
    if r.get("measuring_fraction"):
        words += f", plus {100 * r['measuring_fraction'] / (1 - r['measuring_fraction']):.0f}% more for its measuring"
    return words


def timing_findings(results) -> list[str]:
    """The findings the clock decides (kept in ``timings.json``): per problem the most efficient unbiased
    estimator per second, and who is within the noise of its timings and variance."""
    est = results["estimators"]
    lines = []
    for p in _problem_names(est):
        unb = {n: r for n, r in _unbiased(est, p).items() if "efficiency_range" in r}
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
    """The report's findings that the seed decides (kept in ``results.json``), per problem: the unbiased
    estimator of least variance at equal f-evaluations (and who is within 2 standard errors of it), ``auto``'s
    choice with its budget, the lowest MSE of one estimate with its budget, and whether every unbiased estimator
    passed. The per-second ones: [`timing_findings`][stochgrad.studies.compare_report.timing_findings]."""
    est = results["estimators"]
    lines = []
    for p in _problem_names(est):
        unb = _unbiased(est, p)
        allp = {n: e["problems"][p] for n, e in est.items() if p in e["problems"]}
        if unb:
            cost = {n: (r["variance"] * spent(r), r["variance_se"] * spent(r)) for n, r in unb.items()}
            lo = min(cost, key=lambda n: cost[n][0])
            v, se = cost[lo]
            tied = [n for n in cost if n != lo and cost[n][0] - 2 * cost[n][1] <= v + 2 * se]
            text = (f"On **{p}**, at equal f-evaluations the lowest-variance unbiased estimator is `{lo}` "
                    f"(variance × f-evaluations per estimate {_fmt(v)} ± {_fmt(se)}; {_evals(unb[lo])})")
            text += (f", within 2 standard errors of {', '.join(f'`{n}`' for n in tied)}" if tied else "") + "."
            lines.append(text)
        if "auto" in allp and len(unb) > 1:
            per_eval = {n: r["variance"] * r["evaluations"] for n, r in unb.items() if n != "auto"}
            best = min(per_eval, key=per_eval.get)
            lines.append(f"On **{p}**, `auto` ({_evals(allp['auto'])}) chose `{allp['auto']['auto_choice']}`; "
                         f"the least variance × f-evaluations measured here is `{best}`'s ({_fmt(per_eval[best])}).")
        if allp:
            best_mse = min(allp, key=lambda n: allp[n]["mse"])
            lines.append(f"On **{p}**, the lowest mean squared error of one estimate to the exact gradient is "
                         f"`{best_mse}`'s ({_fmt(allp[best_mse]['mse'])}, {_evals(allp[best_mse])}).")
    failures = [(n, p) for n, e in est.items() for p, r in e["problems"].items()
                if r["declared_unbiased"] and r["max_abs_z"] >= 4]
    lines.append("Every estimator declared unbiased passed |z| < 4 on every problem." if not failures else
                 f"Declared unbiased but biased here: {failures}.")
    return lines


def _env_line(env: dict) -> str:
    keys = ("torch", "python", "threads", "cuda", "cpu", "cores", "load")  # commit and date: in the JSON files
    return "Environment: " + ", ".join(f"{k} {env[k]}" for k in keys if env.get(k) is not None) + "."


PART_WORDS = {"problems": "bias, variance and cost on the Bernoulli problems", "scaling": "scaling with D",
              "race": "the optimisation race", "categorical": "categorical units"}


def _problem_table(est: dict, p: str, with_timing: bool = True) -> list[str]:
    L = [f"### {p}", "", "| estimator | unbiased? | bias (± se) | max abs z | variance (± se) | rel. var. | MSE | "
         "µs / estimate [min … max] | f evals | variance × f evals | efficiency | verdict |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, e in est.items():
        if p not in e["problems"]:
            continue
        r = e["problems"][p]
        t = (f"{_fmt(1e6 * r['seconds_per_estimate'])} [{_fmt(1e6 * r['seconds_min'])} … "
             f"{_fmt(1e6 * r['seconds_max'])}]") if "seconds_per_estimate" in r else "–"
        ev = f"{r['evaluations']}" + (f" + {100 * r['measuring_fraction'] / (1 - r['measuring_fraction']):.0f}%"
                                      if r.get("measuring_fraction") else "")
        L.append(f"| {n} | {'yes' if r['declared_unbiased'] else 'no'} | {_fmt(r['bias_norm'])} ± "
                 f"{_fmt(r['bias_se_norm'])} | {_fmt(r['max_abs_z'])} | {_fmt(r['variance'])} ± "
                 f"{_fmt(r['variance_se'])} | {_fmt(r['relative_variance'])} | {_fmt(r['mse'])} | {t} | {ev} | "
                 f"{_fmt(r['variance'] * spent(r))} | {_fmt(r.get('efficiency', float('nan')))} | {r['verdict']} |")
    return L + [""]


def write_report(results: dict, categorical: dict, out_dir: str, plots: dict, complete: list[str],
                 full: dict | None = None, clock_environment: dict | None = None) -> None:
    """Writes ``report.md`` in ``out_dir`` from the results of the ``complete`` parts and the plot files;
    ``full``: the full run's sizes (the quick run's report says where it differs); ``clock_environment``: the
    date and load of this run."""
    est = results["estimators"]
    c = results["config"]
    pending = [PART_WORDS[p] for p in PART_WORDS if p not in complete]
    L = ["# stochgrad compare", "",
         f"Estimators: {', '.join(est)}. Device: {c['device']}. Seed: {c['seed']}. "
         f"{'Quick run.' if c['quick'] else 'Full run.'} Wall time: {results['wall_seconds']:.0f} s.", "",
         _env_line({**results["environment"], **(clock_environment or {})}), ""]
    if pending:
        L += [f"**Unfinished**: not yet measured: {'; '.join(pending)}. `stochgrad compare --resume` with the same "
              "flags finishes it.", ""]
    L += ["## Findings", "", "Variances are compared at equal f-evaluations (variance × f-evaluations per estimate: "
          "the variance of the mean of as many estimates as the same evaluations of f buy); times per estimate at "
          "equal seconds.", ""]
    L += [f"- {s}" for s in results["findings"] + results["timing_findings"]] or ["- (after the problems part)"]
    L += ["", "## Sizes", "",
          f"Each measurement may take at most {c['budget']:.3g} units of work (estimates × units × the estimator's "
          "cost per estimate and unit relative to `reinforce`'s), so the expensive estimators get fewer estimates "
          f"and a scaling point that would leave fewer than {c['min_estimates']} is not measured (`finite_difference`, "
          "which evaluates f 2D times per estimate, takes at most 4·10⁶/D² estimates and at least 50). Problems: up to "
          f"{c['problem_estimates']} estimates; scaling: up to {c['scaling_estimates']} per point after "
          f"{c['scaling_warmup']} warm-up calls (estimators with state).", ""]
    L += [f"- {s}." for s in results["limits"]] or ["- No estimator was limited."]
    L.append("")
    if c["quick"] and "scaling" in complete and full:
        L += ["", "## This quick run against the full run", "",
              f"The quick run makes {c['scaling_warmup']} warm-up calls instead of {full['scaling_warmup']} (so "
              f"REBAR, RELAX and `learned`, which tune online, are measured less tuned) and {c['scaling_estimates']} "
              f"estimates per point instead of {full['scaling_estimates']}, on D = "
              f"{', '.join(map(str, c['scaling_D']))}. Where its words for the growth with D differ from the full "
              f"run's ({REFERENCE_SOURCE}), trust the full run:", ""]
        L += [f"- {s}" for s in results["quick_vs_full"]] or ["- none: the same conclusions."]
        L.append("")
    if "scaling" in complete:
        L += _scaling_section(results, plots)
    if "problems" in complete:
        L += ["## Bias, variance and cost on problems with exact gradients", "",
              "bias: ‖mean − exact‖ (± the norm of its per-coordinate standard errors); max |z| per coordinate; "
              "variance: Σ_i Var(ĝ_i) of one estimate (± its standard error); time: median seconds per estimate "
              f"over {c['timing_repeats']} timings (interleaved across estimators, one call on up to 500 replicas "
              "each; min … max in brackets); f evals: per estimate (`auto`: + its measuring); efficiency: "
              "1/(variance × median time).", ""]
        for p in _problem_names(est):
            L += _problem_table(est, p)
        L += [f"![bias against variance]({plots['bias_variance']})", "",
              "Filled markers: estimators declared unbiased, whose ‖bias‖ is only Monte-Carlo noise (it should sit "
              "within about one standard error of zero); open markers: estimators declared biased. Bars: ± one "
              "standard error of ‖bias‖ (vertical) and of the variance (horizontal); a bar that would reach zero is "
              "cut at a tenth of the value (log axes). Each estimator has the same colour and marker in every plot.",
              ""]
    if "race" in complete:
        races = _problem_names({n: {"problems": e["race"]} for n, e in est.items()})
        L += ["## Optimisation race", "",
              f"Adam (lr 0.05) on the logits of {c['race_units']} units from σ = ½, {c['race_steps']} steps, "
              "one estimate per step (f-evaluations per step: the table above); the curve is the exact expected loss "
              "minus the loss of the best state. The time axis is one run's clock: read it for orders of magnitude, "
              "the table above for timing spread.", "",
              "| estimator | " + " | ".join(f"final excess loss ({p})" for p in races) + " |",
              "|---|" + "---|" * len(races)]
        for n, e in est.items():
            L.append(f"| {n} | " + " | ".join(_fmt(e["race"][p]["final_excess_loss"]) for p in races) + " |")
        L += ["", f"![race]({plots['race']})", ""]
    if "categorical" in complete and categorical:
        L += _categorical_section(categorical, plots)
    write_atomic(os.path.join(out_dir, "report.md"), "\n".join(L) + "\n")


def _scaling_section(results, plots) -> list[str]:
    est = {n: e for n, e in results["estimators"].items() if e["scaling"]}
    c = results["config"]
    L = ["## How variance scales with the number of stochastic units (the paper's §5)", "",
         "Relative variance = Σ_i Var(ĝ_i) / ‖∇E[L]‖² of one estimate (one sample, two for the estimators that "
         "need two), all logits equal to 1, exact gradients from the losses' expectations in closed form; estimators "
         f"with state first make {c['scaling_warmup']} warm-up calls (baselines settle, REBAR/RELAX/learned tune). "
         "Exponent k: least-squares slope of log relative variance on log D for D ≥ 4. Two losses, kept apart: "
         "**separable** Σ_i (b_i − 0.45)², where each other unit only adds its own variance, so one sample with a "
         "scalar baseline that ignores it has relative variance D − 1 at best (estimators with more f-evaluations, "
         "or a control variate per unit, can go lower: the sentences compare at equal f-evaluations); **coupled** "
         "(Σ_i b_i − 0.45 D)² / D, where every unit interacts with every other.", ""]
    for loss, sentences in scaling_sentences(results).items():
        L += [f"### {loss} loss", ""] + [f"- {s}" for s in sentences] + [""]
    losses = [loss for loss in ("separable", "coupled") if any(loss in e["scaling"] for e in est.values())]
    L += ["| estimator | " + " | ".join(f"k ({loss})" for loss in losses) + " | D measured | "
          f"rel. var. at the smallest D ({losses[0]}) | at the largest D | × f-evaluations at the largest D |",
          "|---|" + "---|" * (len(losses) + 4)]
    for n, e in est.items():
        s = e["scaling"]
        first = s[losses[0]]
        if not first["D"]:
            continue
        L.append(f"| {n} | " + " | ".join(_fmt(s[loss]["exponent"]) for loss in losses) +
                 f" | {first['D'][0]} … {first['D'][-1]} | {_fmt(first['relative_variance'][0])} | "
                 f"{_fmt(first['relative_variance'][-1])} | "
                 f"{_fmt(first['relative_variance'][-1] * first['evaluations'][-1])} |")
    L += ["", f"![variance against D]({plots['scaling']})", "",
          "Top row: estimators declared unbiased (solid lines, filled markers); bottom row: biased ones (dashed "
          "lines, open markers). Legend: each estimator's exponent k of relative variance ∝ D^k, on the separable / "
          "coupled loss.", ""]
    return L


def _categorical_section(res: dict, plots) -> list[str]:
    est = list(res["units"])
    L = ["## Categorical units", "",
         f"Estimators that support one-hot categorical units: {', '.join(est)}. Problems: n = 3 units of K = 4 "
         "classes, exact gradients by enumerating the 64 states; columns as above.", ""]
    for p in _problem_names({n: {"problems": r} for n, r in res["problems"].items()}):
        L += _problem_table({n: {"problems": r} for n, r in res["problems"].items()}, p)
    L += [f"Relative variance Σ Var(ĝ) / ‖∇E[L]‖² against the number of units n (K = {res['units_K']}) and "
          f"against the number of classes K (n = {res['classes_n']}); exponent: slope of log relative variance "
          "on log n (log K), points ≥ 2.", "",
          "| estimator | exponent in n (separable) | exponent in n (coupled) | exponent in K (separable) | "
          "exponent in K (coupled) |", "|---|---|---|---|---|"]
    for n in est:
        u, c = res["units"][n], res["classes"].get(n, {})
        L.append(f"| {n} | {_fmt(u['separable']['exponent'])} | {_fmt(u['coupled']['exponent'])} | "
                 f"{_fmt(c.get('separable', {}).get('exponent', float('nan')))} | "
                 f"{_fmt(c.get('coupled', {}).get('exponent', float('nan')))} |")
    L += ["", f"![categorical scaling]({plots['categorical']})", ""]
    return L


# ---- plots ----------------------------------------------------------------------------------------------
MARKERS = "osD^vP*Xhp<>"
PLOTS = {"scaling": "variance_vs_units.png", "problems": "bias_vs_variance.png", "race": "race.png",
         "categorical": "categorical_scaling.png"}


def styles(results=None) -> dict[str, dict]:
    """Matplotlib style per estimator, the same on every plot and every run (from its place in the registry):
    a colour of ``tab10`` and a marker, no two estimators alike; unbiased ones solid with filled markers, biased
    ones dashed with open markers."""
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10").colors
    out = {}
    for i, (n, cls) in enumerate((n, c) for n, c in REGISTRY.items() if n != "exact"):
        unbiased = bool(results["estimators"][n]["declared_unbiased"]) if results and n in results.get(
            "estimators", {}) else cls.unbiased
        c = colours[i % 10]
        out[n] = dict(color=c, linestyle="-" if unbiased else "--", marker=MARKERS[(i // 10 + 3 * (i % 2)) % len(MARKERS)],
                      markerfacecolor=c if unbiased else "none", markeredgecolor=c)
    return out


def _save(fig, path: str, dpi: int = 110) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=dpi)
    plt.close(fig)


def plot(results: dict, categorical: dict, out_dir: str, parts=(), complete=()) -> dict:
    """Draws the plots of ``parts`` into ``out_dir``; returns the file names of the ``complete`` parts' plots."""
    import matplotlib

    matplotlib.use("Agg")
    draw = {"scaling": _plot_scaling, "problems": _plot_bias_variance, "race": _plot_race,
            "categorical": _plot_categorical}
    for part in parts:
        if part != "categorical" or categorical:
            draw[part](results, categorical, os.path.join(out_dir, PLOTS[part]))
    files = {p: PLOTS[p] for p in complete}
    return {"scaling": files.get("scaling"), "bias_variance": files.get("problems"), "race": files.get("race"),
            "categorical": files.get("categorical")}


def _legend_beside(ax, handles, labels, title):
    ax.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), title=title,
              title_fontsize=7)


def _plot_scaling(results, categorical, path):
    import matplotlib.pyplot as plt

    est = {n: e for n, e in results["estimators"].items() if e["scaling"]}
    names = list(est)
    style = styles(results)
    groups = [("declared unbiased", [n for n in names if est[n]["declared_unbiased"]]),
              ("biased", [n for n in names if not est[n]["declared_unbiased"]])]
    groups = [g for g in groups if g[1]]
    losses = [loss for loss in ("separable", "coupled") if any(loss in e["scaling"] for e in est.values())]
    fig, axes = plt.subplots(len(groups), len(losses), figsize=(5.2 * len(losses) + 3.6, 4.2 * len(groups)),
                             squeeze=False, sharex=True)
    for row, (title, members) in enumerate(groups):
        for col, loss in enumerate(losses):
            ax = axes[row][col]
            for n in members:
                s = est[n]["scaling"][loss]
                pts = [(d, v) for d, v in zip(s["D"], s["relative_variance"]) if v > 0]
                if pts:
                    ks = " / ".join(f"{est[n]['scaling'][l]['exponent']:.2f}" for l in losses)
                    ax.loglog(*zip(*pts), ms=5, lw=1.3, label=f"{n}  (k {ks})", **style[n])
            if loss == "separable":
                D = sorted({d for n in members for d in est[n]["scaling"][loss]["D"] if d > 1})
                if D:
                    ax.loglog(D, [d - 1 for d in D], color="k", lw=1.2, linestyle=":", zorder=5,
                              label="D − 1: one sample, scalar baseline (separable)")
            ax.set_ylabel("relative variance Σ Var(ĝ) / ‖∇‖²")
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
        _legend_beside(axes[row][-1], handles, labels, f"estimator (k: relative variance ∝ D^k,\n{' / '.join(losses)})")
    if results["config"]["quick"]:
        fig.suptitle("quick run: where its growth with D differs from the full run's, report.md says so", fontsize=9)
    _save(fig, path)


def _plot_bias_variance(results, categorical, path):
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    est = results["estimators"]
    style = styles(results)
    probs = _problem_names(est)
    cols = min(2, len(probs))
    rows = -(-len(probs) // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(5.0 * cols + 2.8, 4.2 * rows), squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[len(probs):]:
        ax.set_visible(False)
    for ax, p in zip(axes, probs):
        for n, e in est.items():
            if p not in e["problems"]:
                continue
            r = e["problems"][p]
            x, y = max(r["variance"], 1e-12), max(r["bias_norm"], 1e-6)
            xe, ye = r["variance_se"] if math.isfinite(r["variance_se"]) else 0.0, r["bias_se_norm"]
            st = style[n]
            ax.errorbar(x, y, xerr=[[min(xe, 0.9 * x)], [xe]], yerr=[[min(ye, 0.9 * y)], [ye]],
                        marker=st["marker"], ms=6, color=st["color"], markerfacecolor=st["markerfacecolor"],
                        elinewidth=0.8, capsize=2, linestyle="none", label=n)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("variance of one estimate")
        ax.set_ylabel("‖mean − exact‖")
        ax.set_title(p)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    key = [Line2D([], [], marker="o", color="grey", linestyle="none", label="filled: declared unbiased (‖bias‖ is noise)"),
           Line2D([], [], marker="o", color="grey", markerfacecolor="none", linestyle="none",
                  label="open: declared biased"),
           Line2D([], [], color="grey", lw=0.8, label="bars: ± 1 standard error")]
    grid[0][-1].legend(key + handles, [h.get_label() for h in key] + labels, fontsize=7, loc="upper left",
                       bbox_to_anchor=(1.02, 1.0))
    _save(fig, path)


def _plot_race(results, categorical, path):
    import matplotlib.pyplot as plt

    est = results["estimators"]
    style = styles(results)
    races = _problem_names({n: {"problems": e["race"]} for n, e in est.items()})
    fig, axes = plt.subplots(2, len(races), figsize=(5.2 * len(races) + 2.8, 8), squeeze=False)
    for j, p in enumerate(races):
        for n, e in est.items():
            r = e["race"][p]
            y = [max(v, 1e-8) for v in r["excess_loss"]]
            every = max(1, len(y) // 8)
            axes[0][j].semilogy(r["steps"], y, label=n, lw=1.2, ms=4, markevery=every, **style[n])
            timed = [(t, v) for t, v in zip(r["seconds"], y) if t > 0]
            if timed:
                axes[1][j].loglog(*zip(*timed), label=n, lw=1.2, ms=4, markevery=every, **style[n])
        axes[0][j].set_title(f"race on {p}: against steps")
        axes[1][j].set_title(f"race on {p}: against wall time (one run)")
        axes[0][j].set_xlabel("step")
        axes[1][j].set_xlabel("seconds (estimator + optimiser only)")
        for i in range(2):
            axes[i][j].set_ylabel("E[L] − best state's L")
            axes[i][j].grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    _legend_beside(axes[0][-1], handles, labels, "estimator\n(solid, filled: unbiased;\ndashed, open: biased)")
    _save(fig, path)


def _plot_categorical(results, res, path):
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    est = list(res["units"])
    style = styles(results)
    fig, axes = plt.subplots(2, 2, figsize=(11.5, 8.5), squeeze=False)
    for j, loss in enumerate(("separable", "coupled")):
        for i, (key, axis, fixed) in enumerate((("units", "n", f"K = {res['units_K']}"),
                                                ("classes", "K", f"n = {res['classes_n']}"))):
            ax = axes[i][j]
            ticks = set()
            for name in est:
                s = res[key].get(name, {}).get(loss)
                if not s:
                    continue
                pts = [(x, v) for x, v in zip(s[axis], s["relative_variance"]) if v > 0]
                ticks |= {x for x, _ in pts}
                if pts:
                    ax.loglog(*zip(*pts), ms=4, lw=1.2, label=name, **style[name])
            ax.set_xlabel(f"{'units n' if axis == 'n' else 'classes K'} ({fixed})")
            ax.set_ylabel("relative variance Σ Var(ĝ) / ‖∇‖²")
            ax.set_title(f"{loss} loss, against {axis}")
            ax.grid(True, which="both", alpha=0.3)
            if ticks:   # one label per measured point, none between (they overlapped on a log axis)
                ax.xaxis.set_major_locator(FixedLocator(sorted(ticks)))
                ax.xaxis.set_minor_locator(NullLocator())
                ax.set_xticklabels([str(t) for t in sorted(ticks)])
    def exponent(key, name, loss):
        return f"{res[key].get(name, {}).get(loss, {}).get('exponent', float('nan')):.2f}"

    handles = axes[0][-1].get_legend_handles_labels()[0]
    labels = [f"{h.get_label()}  (n: {exponent('units', h.get_label(), 'separable')} / "
              f"{exponent('units', h.get_label(), 'coupled')}; K: {exponent('classes', h.get_label(), 'separable')} / "
              f"{exponent('classes', h.get_label(), 'coupled')})" for h in handles]
    _legend_beside(axes[0][-1], handles, labels,
                   "estimator (exponent of relative variance\n∝ n^k and ∝ K^k: separable / coupled)")
    _save(fig, path)
