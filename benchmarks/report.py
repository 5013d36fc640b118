"""Writes ``benchmarks/results/README.md`` from the result files: the latest per benchmark and machine, a table each.

Results are data (``record.py`` files them as ``results/<benchmark>/<machine>/<date>_<commit>.json``); every table
and figure that the README and the documentation quote is drawn from them here:

    python benchmarks/report.py             # results/README.md
    python benchmarks/report.py --figures   # also the figures beside their JSON, and their copies under docs/results/

Each table sits between snippet markers named ``<benchmark>-<machine>`` so that a documentation page includes it
(``--8<-- "benchmarks/results/README.md:gating-cpu-2core"``) instead of copying numbers.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOCS = HERE.parent / "docs" / "results"

WHAT = {  # benchmark -> what it measures and which script does it
    "overhead_bernoulli": "Time per gradient estimate through `sg.expect` against the same formula hand-written in plain "
                          "torch, Bernoulli units (`benchmarks/overhead.py`): median of within-round ratios; section 1 "
                          "against the common idioms (target ≤ 1.1), 1b against references with the library's own "
                          "dispatch savings, 2 REBAR and RELAX at their default tuning against plain reinforce (target ≤ 5).",
    "overhead_categorical": "The same for one-hot categorical units, logits `(b, n, K)` "
                            "(`benchmarks/overhead.py --distribution categorical`).",
    "check_cost": "What the logits' value check (finite logits, one reduction and one read) costs inside a call at one "
                  "example: a same-process A/B with the check replaced.",
    "local_vs_backprop": "One training step of a deep stochastic network: broadcast-only local learning against "
                         "back-propagation through straight-through units, with hand-written references on both sides "
                         "(`benchmarks/local_vs_backprop.py`; target local / backprop ≤ 0.75).",
    "compile_speed": "`torch.compile` (inductor) against eager: step time and graph breaks "
                     "(`benchmarks/compile_speed.py`).",
    "sync_check": "No host-device synchronisation on the happy path, checked under "
                  "`torch.cuda.set_sync_debug_mode('error')` (`benchmarks/device/sync_check.py`).",
    "large_k": "Categorical units at vocabulary scale, logits `(rows, K)`: time and peak memory per gradient estimate "
               "(forward + backward, a linear loss) of stochgrad's categorical estimators against "
               "`F.gumbel_softmax(hard=True)` and the same estimators hand-written in plain torch, eager and "
               "`torch.compile(fullgraph=True)`, and the full-size `(rows, K)` tensors each allocates "
               "(`benchmarks/large_k.py`).",
    "vae_equal_steps": "The linear binary VAE under the DisARM protocol, stochgrad against a hand-written plain-torch "
                       "loop at equal steps (`benchmarks/vae_equal_steps.py`): gap = stochgrad − plain, nats.",
    "vae_plain_speed": "Time per VAE training step, stochgrad ÷ the plain-torch loop, in one process on the same "
                       "batches (`benchmarks/vae_plain.py speed`).",
    "vae_bernoulli_estimators": "Estimators on the linear binary VAE (200 Bernoulli latents) at one fixed training "
                                "budget each (`benchmarks/reproduce/vae_estimators.sh`).",
    "vae_categorical_estimators": "Estimators on the categorical VAE (20 variables × 10 classes) at one fixed budget "
                                  "each (`benchmarks/reproduce/vae_estimators.sh`).",
    "gating": "Conditional computation on MNIST at the paper's protocol, every gater (`stochgrad train gating`, "
              "`benchmarks/reproduce/gating.sh`); test error with deterministic gates, 10% open.",
    "gating_expert_relu": "Gating with rectified expert units (`--expert relu`), short runs.",
    "gating_snr": "What limits the unbiased gater: the signal-to-noise ratio of one gater-gradient estimate "
                  "(`benchmarks/gating_snr.py`).",
    "tune_every": "Variance of one estimate at equal steps when double_cv and rodeo tune every k-th call, tuned on the "
                  "same problems as every call (paired), on the linear VAE trained by disarm "
                  "(`benchmarks/tune_every.py`); ratio to tune_every = 1, mean over seeds.",
    "carms_variance": "CARMS's variance against the official code's estimator (its ordering set, its weight clip), "
                      "on problems with exact gradients (`benchmarks/carms_variance.py`).",
    "vae_race_linear": "The equal-time race on the linear binary VAE (DisARM protocol, 2 evaluations of f per example): "
                       "each estimator's objective after the same CPU seconds of training "
                       "(`benchmarks/reproduce/vae_race.py`).",
    "vae_race_categorical": "The equal-time race on the categorical VAE (20 variables × 10 classes, 4 samples per "
                            "example) (`benchmarks/reproduce/vae_race.py`).",
    "vae_reinmax": "The categorical VAE at ReinMax's published protocol (`stochgrad train vae --protocol reinmax`, "
                   "`benchmarks/reproduce/vae_reinmax.py`): training and test −ELBO as the published code prints them.",
}
DOCS_FIGURES = {  # the documentation's copies of the figures drawn here
    "vae_equal_steps.png": ("vae_equal_steps", "cpu-2core"),
    "gating_valid_error.png": ("gating", "cpu-2core"),
    "vae_categorical_estimators.png": ("vae_categorical_estimators", "cpu-16core"),
    "vae_race_linear.png": ("vae_race_linear", "cpu-2core"),
    "vae_race_categorical.png": ("vae_race_categorical", "cpu-2core"),
}


# ---- reading ---------------------------------------------------------------------------------------------------
def latest(root: Path = RESULTS) -> dict[tuple[str, str], tuple[Path, dict]]:
    """``{(benchmark, machine): (path, result)}``: the result with the latest ``date`` in each folder."""
    out = {}
    for path in sorted(root.glob("*/*/*.json")):
        result = json.loads(path.read_text())
        key = (path.parent.parent.name, path.parent.name)
        if key not in out or result["date"] > out[key][1]["date"]:
            out[key] = (path, result)
    return dict(sorted(out.items(), key=lambda kv: (list(WHAT).index(kv[0][0]) if kv[0][0] in WHAT else 99, kv[0])))


# ---- table helpers ---------------------------------------------------------------------------------------------
def table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def num(value, spec=".2f") -> str:
    return "–" if value is None else format(value, spec)


def spread(cells: list) -> str:
    """One run: ``median [quartiles]``; several: the range of their medians."""
    if len(cells) == 1:
        m, lo, hi = cells[0]
        return f"{m:.2f} [{lo:.2f}, {hi:.2f}]"
    low, high = (f"{v:.2f}" for v in (min(c[0] for c in cells), max(c[0] for c in cells)))
    return low if low == high else f"{low}–{high}"


def ratio_sections(runs: list[dict], sections: dict[str, str]) -> list[str]:
    lines = []
    for key, title in sections.items():
        if not any(run.get(key) for run in runs):
            continue
        names = list(runs[0][key])
        cells = list(runs[0][key][names[0]])
        lines += ["", f"*{title}*", ""]
        lines += table(["estimator", *(c.replace(",", ", ") for c in cells)],
                       [[n, *(spread([run[key][n][c] for run in runs]) for c in cells)] for n in names])
    return lines


# ---- one formatter per benchmark -------------------------------------------------------------------------------
def overhead(result):
    runs = list(result["runs"].values())
    how = (f"{len(runs)} runs: the range of their medians" if len(runs) > 1 else
           "one run: median [quartiles] of the within-round ratios")
    return [f"{how}; rounds {runs[0]['rounds']} ({runs[0].get('small_rounds', runs[0]['rounds'])} at the one-example "
            "cells)."] + ratio_sections(runs, {
                "core": "1. stochgrad / hand-written plain torch",
                "core_tuned": "1b. stochgrad / references with the library's dispatch savings",
                "rebar_relax": "2. REBAR and RELAX (default tuning) / plain reinforce"})


def check_cost(result):
    lines = []
    for key, title in (("with_and_without", "with and without the check"), ("numpy_variant", "the check through numpy"),
                       ("parts", "the check's parts, against none")):
        run = result["runs"][key]
        rows = run["rows"]
        cols = sorted({c for r in rows.values() for c in r if c not in ("what",)}, key=lambda c: (c != "microseconds_per_call", c))
        lines += ["", f"*{title}* ({run['rounds']} rounds × {run['calls_per_block']} calls)", ""]
        lines += table(["", *(c.replace("microseconds_per_call", "µs per call") for c in cols)],
                       [[name, *(spread([r[c]]) if isinstance(r.get(c), list) else r.get(c, "–") for c in cols)]
                        for name, r in rows.items()])
    return lines[1:]


LOCAL = {"local / backprop": "local / backprop", "control: backprop / backprop": "control",
         "local, plain torch / backprop": "hand-written local / backprop",
         "local / local, plain torch": "local / hand-written local", "forward only / backprop": "forward only / backprop"}


def local_vs_backprop(result):
    rows = []
    for run in result["runs"].values():
        step, mem = run["per_step"], run["memory"]
        rows.append([f"{run['layers']} × {run['width']}, batch {run['batch']}", "fixed" if run["keep_heap"] else "dynamic",
                     run["rounds"], *(spread([run["ratios"][k]]) for k in LOCAL),
                     f"{step['local']['median_seconds'] * 1e3:.0f} / {step['backprop']['median_seconds'] * 1e3:.0f}",
                     f"{step['local']['minor_faults']:.0f} / {step['backprop']['minor_faults']:.0f}",
                     f"{mem['local']['held_for_backward_bytes'] / 2 ** 20:.1f} / "
                     f"{mem['backprop']['held_for_backward_bytes'] / 2 ** 20:.1f}"])
    return table(["network", "malloc thresholds", "rounds", *LOCAL.values(), "ms per step (local / backprop)",
                  "minor page faults per step", "MiB held for backward"], rows)


def compile_speed(result):
    rows = []
    for run in result["runs"].values():
        for case, c in run["cases"].items():
            rows.append([case, spread([c["ratio"]]), f"{statistics.median(c['eager_s']) * 1e3:.2f}",
                         f"{c['compile_s']:.1f}", c["graphs"], c["graph_breaks"]])
    run = next(iter(result["runs"].values()))
    return [f"{run['backend']}, {run['rounds']} rounds × {run['reps']} steps.", ""] + table(
        ["case", "compiled / eager", "eager ms per step", "compile s", "graphs", "graph breaks"], rows)


def mib(nbytes) -> str:
    if nbytes is None:
        return "–"
    m = nbytes / 2 ** 20
    return f"{m:.1f}" if m < 10 else f"{m:.0f}"


def large_k(result):
    lines = []
    for run in result["runs"].values():
        settings = ", ".join(f"{k} {v}" for k, v in run["settings"].items())
        lines += [f"{run['device']}, {run['dtype']}, {run['rounds']} rounds; {settings}. ms per estimate (median over "
                  "rounds); peak MiB above the logits (CPU: the resident set, every block of 256 KiB or more mapped "
                  "afresh; CUDA: the allocator's); allocated MiB: the peak of the bytes held by tensors the estimate "
                  "allocated (eager, op by op); full-size: `(rows, K)` tensors allocated, in-place results not "
                  "counted."]
        failures = {}
        for size, cell in run["cells"].items():
            rows = []
            for name, entry in cell.items():
                if "skipped" in entry:
                    rows.append([name, f"skipped: {entry['skipped']}", "", "", "", "", "", ""])
                    continue
                e, c = entry["eager"], entry["compiled"]
                for mode, x in (("eager", e), ("compiled", c)):
                    if "error" in x:
                        failures.setdefault((name, mode), x["error"])
                ms = lambda x: "fails" if "error" in x else ("–" if "median_s" not in x else f"{x['median_s'] * 1e3:.2f}")  # noqa: E731
                ratio = e.get("ratio_to_gumbel_softmax")
                rows.append([name, ms(e), ms(c) if run["compiled"] else "–", num(ratio), mib(e.get("peak_bytes")),
                             mib(c.get("peak_bytes")) if run["compiled"] else "–", mib(e.get("tensor_peak_bytes")),
                             e.get("full_size", "–")])
            rows_k = size.split("x")
            lines += ["", f"*{int(rows_k[0]):,} × {int(rows_k[1]):,}*", ""]
            lines += table(["method", "eager ms", "compiled ms", "eager ÷ gumbel_softmax eager", "peak MiB eager",
                            "peak MiB compiled", "allocated MiB eager", "full-size tensors"], rows)
        if failures:
            lines += ["", "Failures (the first size each appears at):", ""]
            lines += [f"- {name}, {mode}: `{error}`" for (name, mode), error in failures.items()]
    return lines


def sync_check(result):
    run = next(iter(result["runs"].values()))
    return [f"{run['device']}, torch {run['torch']}.", ""] + table(
        ["check", "result"], [[k, v] for k, v in run["results"].items()])


KEYS = (("train_elbo_last_epoch", "train (last epoch, 1 sample)"), ("test_elbo_1_sample", "test 1-sample"),
        ("test_elbo_100_samples", "test 100-sample bound"))


def vae_equal_steps(result):
    runs = {(s["implementation"], s["estimator"], s["seed"], s["steps"]): s for s in result["runs"].values()}
    estimators = list(dict.fromkeys(k[1] for k in sorted(runs, key=lambda k: k[1])))
    rows, gaps = [], {}
    for est in estimators:
        for steps in sorted({k[3] for k in runs}):
            for seed in sorted({k[2] for k in runs}):
                lib, plain = runs.get(("stochgrad", est, seed, steps)), runs.get(("plain", est, seed, steps))
                if lib is None and plain is None:
                    continue
                row = [est, f"{steps:,}", seed]
                for key, _ in KEYS:
                    a, b = (None if r is None else r.get(key) for r in (lib, plain))
                    gap = None if a is None or b is None else a - b
                    if gap is not None:
                        gaps.setdefault((est, steps, key), []).append(gap)
                    row += [num(a), num(b), num(gap, "+.2f")]
                rows.append(row)
    lines = table(["estimator", "steps", "seed", *(c for _, label in KEYS for c in (f"{label}: stochgrad", "plain", "gap"))],
                  rows)
    mean = [[est, f"{steps:,}", max(len(gaps.get((est, steps, k), [])) for k, _ in KEYS),
             *(num(statistics.mean(gaps[(est, steps, k)]) if (est, steps, k) in gaps else None, "+.2f") for k, _ in KEYS)]
            for est in estimators for steps in sorted({k[3] for k in runs}) if (est, steps, KEYS[0][0]) in gaps]
    return lines + ["", "Mean gap over the seeds (nats):", ""] + table(
        ["estimator", "steps", "seeds", *(label for _, label in KEYS)], mean)


def vae_plain_speed(result):
    by = {}
    for label, rows in result["runs"].items():
        for r in rows:
            by.setdefault(r["estimator"], []).append(
                f"{r['time_ratio_stochgrad_over_plain']:.2f} [{r['ratio_quartiles'][0]:.2f}, {r['ratio_quartiles'][1]:.2f}]")
    return table(["estimator", *(f"stochgrad ÷ plain, {label}" for label in result["runs"])],
                 [[est, *cells] for est, cells in by.items()])


def first(summary: dict, *keys):
    return next((summary[k] for k in keys if summary.get(k) is not None), None)


def vae_estimators(result):
    rows = []
    for name, run in result["runs"].items():
        s, m = run.get("summary", {}), run.get("metrics", {})
        variance = first(s, "encoder_grad_variance_steps_1001_2000") or (m.get("encoder_grad_variance") or [None])[-1]
        rows.append([name, first(s, "steps") or (m.get("step") or ["–"])[-1],
                     num(first(s, "test_elbo_100_samples", "test_bound_100"), ".1f"),
                     num(first(s, "test_elbo_1_sample"), ".1f"),
                     num(first(s, "train_elbo_100_samples", "train_bound_100"), ".1f"),
                     num(first(s, "train_elbo_last_epoch"), ".1f"), num(variance, ".3g"),
                     (s.get("auto") or {}).get("chosen", "")])
    rows.sort(key=lambda r: -float(r[2]) if r[2] != "–" else 1e9)
    header = ["estimator", "steps", "test bound (k=100)", "test ELBO (1 sample)", "train bound (k=100)",
              "train ELBO, last epoch", "encoder-gradient variance"]
    if any(r[-1] for r in rows):
        return table(header + ["auto's choice at the end"], rows)
    return table(header, [r[:-1] for r in rows])


GATING = [("epochs", "epochs", "{}"), ("best_epoch", "best epoch", "{}"),
          ("test_error_percent", "test err %", "{:.2f}"), ("valid_error_percent", "valid err %", "{:.2f}"),
          ("test_open_fraction", "open at test", "{:.3f}"), ("test_hamming", "Hamming", "{:.3f}"),
          ("test_hamming_independent", "2r(1−r)", "{:.3f}"), ("test_class_contrast", "class contrast", "{:.2f}"),
          ("test_error_percent_gates_of_another_example", "err % through another example's gates", "{:.2f}"),
          ("mean_field_test_error_percent", "err %, gates at their mean", "{:.2f}")]


def gating(result):
    runs = sorted(result["runs"].items(), key=lambda kv: kv[1]["summary"]["test_error_percent"])
    return table(["gater", *(c[1] for c in GATING)],
                 [[name, *(fmt.format(run["summary"][k]) if k in run["summary"] else "–" for k, _, fmt in GATING)]
                  for name, run in runs])


def gating_expert_relu(result):
    rows = []
    for name, run in result["runs"].items():
        m, s = run["metrics"], run.get("summary", {})
        rows.append([name, m["epoch"][-1], f"{m['valid_error'][-1]:.2f}", num(s.get("test_error_percent"))])
    return table(["gater", "epochs", "valid err % (last epoch)", "test err %"], rows)


def gating_snr(result):
    run = next(iter(result["runs"].values()))
    rows = [[k, f"{r['mean_norm']:.3f}", f"{r['standard_error_of_mean']:.3f}", f"{r['noise']:.2f}",
             f"{r['snr_per_estimate']:.2f}"] for k, r in run["rows"].items()]
    return [f"{run['estimates']} estimates on one batch of {run['batch']}; cosine of the two means "
            f"{run['cosine_of_means']:.2f}.", ""] + table(
        ["estimator", "norm of the mean", "its standard error", "spread of one estimate", "signal-to-noise of one"],
        rows)


def tune_every(result):
    by = {}   # variant -> [(step, variance ratio to tune_every=1)] over seeds
    for run in result["runs"].values():
        points = run["checkpoints"]
        for label, rows in points.items():
            ref = points[label.split("(")[0] + "(tune_every=1)"]
            for row, base in zip(rows, ref):
                by.setdefault(label, {}).setdefault(row["step"], []).append(row["variance"] / base["variance"])
    steps = sorted({step for cells in by.values() for step in cells})
    return table(["variant", *(f"step {s}" for s in steps)],
                 [[label, *(f"{statistics.mean(cells[s]):.3f}" if s in cells else "–" for s in steps)]
                  for label, cells in by.items()])


def carms_variance(result):
    rows = []
    for setting, row in result["runs"].items():
        ref = row["official"]["variance"]
        rows.append([setting, *(f"{row[k]['variance']:.4g} ± {row[k]['variance_se']:.2g} ({row[k]['variance'] / ref:.3f}×, "
                                f"max z {row[k]['max_abs_z']:.1f})" for k in ("official", "official_unclipped", "carms",
                                                                         "carms_rotations_4"))])
    return table(["setting", "official code (clipped)", "official set, unclipped", "carms", "carms, rotations=4"], rows)


def vae_race(result):
    rows = []
    for name, run in result["runs"].items():
        s = run.get("summary", {})
        auto = s.get("auto") or {}
        rows.append([name, s.get("steps", "–"), num(s.get("train_seconds"), ".0f"),
                     num(s.get("test_elbo_100_samples"), ".2f"), num(s.get("test_elbo_1_sample"), ".2f"),
                     num(s.get("train_elbo_last_epoch"), ".2f"), auto.get("chosen", "")])
    rows.sort(key=lambda r: -float(r[3]) if r[3] != "–" else 1e9)
    out = table(["run", "steps", "CPU seconds", "test bound (k=100)", "test ELBO (1 sample)",
                 "train ELBO, last epoch", "auto's choice at the end"], rows)
    seeds: dict[str, list[float]] = {}   # runs named <model>_<estimator>_s<seed>: the estimator's bound over seeds
    for name, run in result["runs"].items():
        bound = (run.get("summary") or {}).get("test_elbo_100_samples")
        if bound is not None:
            seeds.setdefault(name.rsplit("_s", 1)[0], []).append(bound)
    several = {k: v for k, v in seeds.items() if len(v) > 1}
    if several:
        rows = [[k, len(v), f"{statistics.mean(v):.2f}", f"{statistics.stdev(v) / len(v) ** 0.5:.2f}",
                 ", ".join(f"{x:.2f}" for x in v)] for k, v in sorted(several.items(), key=lambda kv: -statistics.mean(kv[1]))]
        out += ["", *table(["estimator", "seeds", "mean test bound (k=100)", "standard error", "each seed"], rows)]
    return out


def vae_reinmax(result):
    rows = []
    for name, run in result["runs"].items():
        s, m = run.get("summary") or {}, run.get("metrics") or {}
        steps = s.get("steps") or (m.get("step") or [0])[-1]
        rows.append([name, "yes" if run.get("finished") else "no", steps, f"{steps / 600:.1f}",
                     num(-s["train_elbo_last_epoch"] if "train_elbo_last_epoch" in s else None, ".2f"),
                     num(-s["test_elbo_1_sample_analytic_kl"] if "test_elbo_1_sample_analytic_kl" in s else None, ".2f"),
                     num(-(m.get("train_elbo") or [None])[-1] if m.get("train_elbo") else None, ".2f")])
    return table(["estimator", "finished", "steps", "epochs", "train −ELBO (last epoch)", "test −ELBO (1 sample, exact KL)",
                  "train −ELBO, last 100 steps"], rows)


FORMAT = {"overhead_bernoulli": overhead, "overhead_categorical": overhead, "check_cost": check_cost,
          "local_vs_backprop": local_vs_backprop, "compile_speed": compile_speed, "sync_check": sync_check,
          "large_k": large_k,
          "vae_equal_steps": vae_equal_steps, "vae_plain_speed": vae_plain_speed,
          "vae_bernoulli_estimators": vae_estimators, "vae_categorical_estimators": vae_estimators,
          "gating": gating, "gating_expert_relu": gating_expert_relu, "gating_snr": gating_snr,
          "tune_every": tune_every, "carms_variance": carms_variance, "vae_race_linear": vae_race,
          "vae_race_categorical": vae_race, "vae_reinmax": vae_reinmax}


# ---- the README ------------------------------------------------------------------------------------------------
def render(root: Path = RESULTS) -> str:
    results = latest(root)
    machines = json.loads((root / "machines.json").read_text())
    lines = ["# Benchmark results", "",
             "Generated by `python benchmarks/report.py` from the files below: the latest result per benchmark and "
             "machine (`<benchmark>/<machine>/<date>_<commit>.json`, filed by `benchmarks/record.py`). Do not edit: "
             "rerun the benchmark, file its output, and regenerate. Older results are in the git history.", "",
             "Machines:", ""] + [f"- `{name}`: {text}." for name, text in machines.items()]
    done = set()
    for (benchmark, machine), (path, result) in results.items():
        if benchmark not in done:
            lines += ["", f"## {benchmark}", "", WHAT.get(benchmark, "")]
            done.add(benchmark)
        rel = path.relative_to(root).as_posix()
        figure = path.with_suffix(".png")
        lines += ["", f"### {machine}: [{path.name}]({rel})", "",
                  f"<!-- --8<-- [start:{benchmark}-{machine}] -->", f"`{result['command']}`", ""]
        if result.get("note"):
            lines += [result["note"], ""]
        lines += FORMAT[benchmark](result) + [f"<!-- --8<-- [end:{benchmark}-{machine}] -->"]
        if figure.exists():
            lines += ["", f"![{benchmark} on {machine}]({figure.relative_to(root).as_posix()})"]
    return "\n".join(lines) + "\n"


# ---- figures ---------------------------------------------------------------------------------------------------
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def figure_vae_equal_steps(result, out: Path):
    """Seed 0, disarm and reinforce_loo: training ELBO, test bounds, encoder-gradient variance (stochgrad solid,
    the plain loop dashed)."""
    plt = _plt()
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    for est in ("disarm", "reinforce_loo"):
        for impl in ("stochgrad", "plain"):
            curve = result["curves"].get(f"{impl}_{est}_s0")
            if not curve:
                continue
            style, name = ("-" if impl == "stochgrad" else "--"), f"{impl} {est}"
            points = sorted((s["steps"], s["test_elbo_100_samples"]) for s in result["runs"].values()
                            if (s["implementation"], s["estimator"], s["seed"]) == (impl, est, 0))
            ax[0].plot(curve["step"], curve["train_elbo"], style, label=name)
            ax[1].plot(*zip(*points), style + "o", label=name)
            if curve.get("encoder_grad_variance"):
                ax[2].plot(curve["step"], curve["encoder_grad_variance"], style, label=name)
    for a, title in zip(ax, ("training ELBO (1 sample, mean over 500 steps)", "test 100-sample bound",
                             "encoder-gradient variance (stochgrad)")):
        a.set_title(title)
        a.set_xlabel("step")
        a.legend()
    ax[0].set_ylim(bottom=-200)
    fig.suptitle("Linear VAE, DisARM protocol, seed 0: stochgrad against the plain-torch loop")
    fig.tight_layout()
    fig.savefig(out, dpi=90, metadata={"Software": None})
    plt.close(fig)


def figure_gating(result, out: Path):
    """Validation error per epoch of every gater, with the paper's < 2%."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, run in result["runs"].items():
        ax.plot(run["metrics"]["epoch"], run["metrics"]["valid_error"], marker=".", label=name)
    ax.axhline(2.0, color="k", ls=":", lw=1, label="the paper: < 2% (every gater)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation error %")
    ax.set_title("gating on MNIST: deterministic gates, 10% open", fontsize=10)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    fig.savefig(out, dpi=110, metadata={"Software": None})
    plt.close(fig)


def figure_vae_estimators(result, out: Path):
    """Training ELBO against step for every estimator of the run."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, run in result["runs"].items():
        m = run.get("metrics") or {}
        if m.get("step"):
            ax.plot(m["step"], m["train_elbo"], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training ELBO (1 sample)")
    ax.set_ylim(bottom=-200)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{result['benchmark']} on {result['machine']}: training ELBO", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100, metadata={"Software": None})
    plt.close(fig)


def figure_vae_race(result, out: Path):
    """Training ELBO (moving average of the logged 100-step means) against CPU seconds, one line per run; auto's
    switches marked where they happened (a call is a step)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    if len(result["runs"]) > 10:   # (the default cycle repeats its 10 colours)
        ax.set_prop_cycle(color=plt.cm.tab20.colors)
    for name, run in result["runs"].items():
        m, s = run.get("metrics") or {}, run.get("summary") or {}
        if not m.get("seconds"):
            continue
        elbo = m["train_elbo"]
        smooth = [statistics.mean(elbo[max(0, i - 9):i + 1]) for i in range(len(elbo))]
        history = (s.get("auto") or {}).get("history", [])[1:]
        line, = ax.plot(m["seconds"], smooth, label=name + (f" ({len(history)} switches)" if history else ""),
                        lw=1.2)
        shapes = {}   # a marker per candidate switched to (no text: auto may switch hundreds of times)
        for call, label in history:
            cand = label.split("(")[0]
            marker = shapes.setdefault(cand, "v^sDP*X"[len(shapes) % 7])
            i = min(range(len(m["step"])), key=lambda k: abs(m["step"][k] - call))
            ax.plot(m["seconds"][i], smooth[i], marker, ms=3, color=line.get_color(), alpha=0.6)
        for cand, marker in shapes.items():
            ax.plot([], [], marker, ms=4, color=line.get_color(), linestyle="", label=f"{name}: to {cand}")
    ax.set_xlabel("training CPU seconds (one thread)")
    ax.set_ylabel("training ELBO (1 sample, moving mean)")
    lows = [min(r["metrics"]["train_elbo"][len(r["metrics"]["train_elbo"]) // 10:] or [0])
            for r in result["runs"].values() if (r.get("metrics") or {}).get("train_elbo")]
    if lows:
        ax.set_ylim(bottom=min(lows) - 5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{result['benchmark']} on {result['machine']}: equal CPU time (auto's switches marked)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100, metadata={"Software": None})
    plt.close(fig)


FIGURES = {"vae_equal_steps": figure_vae_equal_steps, "gating": figure_gating,
           "vae_categorical_estimators": figure_vae_estimators, "vae_race_linear": figure_vae_race,
           "vae_race_categorical": figure_vae_race}


def draw(root: Path = RESULTS, docs: Path = DOCS) -> list[Path]:
    """The figures of the latest results, beside their JSON, and the documentation's copies of them."""
    drawn = []
    results = latest(root)
    for (benchmark, machine), (path, result) in results.items():
        if benchmark in FIGURES:
            FIGURES[benchmark](result, path.with_suffix(".png"))
            drawn.append(path.with_suffix(".png"))
    for name, key in DOCS_FIGURES.items():
        shutil.copyfile(results[key][0].with_suffix(".png"), docs / name)
        drawn.append(docs / name)
    return drawn


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--figures", action="store_true", help="also draw the figures (needs matplotlib)")
    a = p.parse_args(argv)
    if a.figures:
        for path in draw():
            print(path.relative_to(HERE.parent))
    (RESULTS / "README.md").write_text(render())
    print((RESULTS / "README.md").relative_to(HERE.parent))


if __name__ == "__main__":
    main()
