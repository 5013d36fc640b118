"""Tables (markdown, to stdout) and a curves plot from the runs of ``benchmarks/device/i12.sh``.

Run: ``python benchmarks/device/i12_report.py DIR`` where DIR holds one folder per run (``summary.json``,
``metrics.csv``); writes ``DIR/long_curves.png`` beside.
"""
from __future__ import annotations

import csv
import json
import os
import sys


def load(d, name):
    p = os.path.join(d, name, "summary.json")
    return json.load(open(p)) if os.path.exists(p) else None


def at(summary, step):
    """The test/train numbers of a run at ``step``: from its mid-run evaluations, or its end."""
    if summary is None:
        return None
    if summary.get("steps") == step:
        return summary
    for e in summary.get("evaluations", []):
        if e["step"] == step:
            return e
    return None


def fmt(v, spec=".2f"):
    return "–" if v is None else format(v, spec)


def vae_tables(d, steps_long, steps_short):
    out = ["## Linear VAE, DisARM protocol (batch 50, Adam 1e-4), stochgrad against the plain-torch loop at equal steps",
           "", "Gap = stochgrad − plain (nats; positive: stochgrad higher). Train: one-sample ELBO over the last full "
           "epoch; test: one-sample ELBO and the 100-sample bound on the test images.", "",
           "| estimator | steps | seed | train stochgrad | train plain | gap | test 1-sample stochgrad | plain | gap | "
           "test 100-sample stochgrad | plain | gap |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    gaps = {}
    for est, steps in (("disarm", steps_long), ("reinforce_loo", steps_long), ("straight_through_sigmoid", steps_short)):
        for step in steps:
            for seed in (0, 1):
                lib_name = f"vae_long_{est}_s0" if seed == 0 and est != "straight_through_sigmoid" else f"vae_{est}_s{seed}"
                lib, pl = at(load(d, lib_name), step), at(load(d, f"plain_{est}_s{seed}"), step)
                row = [est, str(step), str(seed)]
                for key in ("train_elbo_last_epoch", "test_elbo_1_sample", "test_elbo_100_samples"):
                    a, b = (None if r is None else r.get(key) for r in (lib, pl))
                    g = None if a is None or b is None else a - b
                    if g is not None:
                        gaps.setdefault((est, step, key), []).append(g)
                    row += [fmt(a), fmt(b), fmt(g, "+.2f")]
                out.append("| " + " | ".join(row) + " |")
    out += ["", "Mean gap over seeds:", "", "| estimator | steps | train | test 1-sample | test 100-sample |", "|---|---|---|---|---|"]
    for est, steps in (("disarm", steps_long), ("reinforce_loo", steps_long), ("straight_through_sigmoid", steps_short)):
        for step in steps:
            vals = [gaps.get((est, step, k)) for k in ("train_elbo_last_epoch", "test_elbo_1_sample", "test_elbo_100_samples")]
            out.append(f"| {est} | {step} | " + " | ".join(fmt(None if not v else sum(v) / len(v), "+.2f") for v in vals) + " |")
    return out


def speed_table(d):
    p = os.path.join(d, "vae_speed", "speed.json")
    out = ["", "## Time per training step, interleaved in one process (same batches; process CPU time, median of the "
           "rounds' ratios)", ""]
    if not os.path.exists(p):
        return out + ["(no speed result)"]
    out += ["| estimator | plain steps/s | stochgrad steps/s | time per step, stochgrad ÷ plain |", "|---|---|---|---|"]
    for r in json.load(open(p)):
        out.append(f"| {r['estimator']} | {r['plain_steps_per_second']:.0f} | {r['stochgrad_steps_per_second']:.0f} | "
                   f"{r['time_ratio_stochgrad_over_plain']:.3f} |")
    out += ["", "Steps per second of each training run (16 processes and the other engineers' beside it):", "",
            "| run | steps | steps/s |", "|---|---|---|"]
    for name in sorted(os.listdir(d)):
        s = load(d, name)
        if s and "steps_per_second" in s:
            out.append(f"| {name} | {s['steps']} | {s['steps_per_second']:.0f} |")
    return out


def long_runs(d):
    out = ["", "## Long runs (linear VAE, DisARM protocol, seed 0, wall-clock budget)", "",
           "| estimator | steps | train ELBO (last epoch) | test 1-sample | test 100-sample | steps/s |", "|---|---|---|---|---|---|"]
    curves = {}
    for est in ("disarm", "reinforce_loo"):
        name = f"vae_long_{est}_s0"
        s = load(d, name)
        if s:
            out.append(f"| {est} | {s['steps']} | {s['train_elbo_last_epoch']:.2f} | {s['test_elbo_1_sample']:.2f} | "
                       f"{s['test_elbo_100_samples']:.2f} | {s['steps_per_second']:.0f} |")
        p = os.path.join(d, name, "metrics.csv")
        if os.path.exists(p):
            curves[est] = [(float(r["step"]), float(r["train_elbo"]), float(r["encoder_grad_variance"]))
                           for r in csv.DictReader(open(p))]
    if curves:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for est, rows in curves.items():
            axes[0].plot([r[0] for r in rows], [r[1] for r in rows], label=est)
            axes[1].plot([r[0] for r in rows], [r[2] for r in rows], label=est)
        axes[0].set_ylabel("train ELBO (window of 500 steps)")
        lows = [r[1] for rows in curves.values() for r in rows]
        if lows:
            axes[0].set_ylim(bottom=max(-200, min(lows)))
        axes[1].set_ylabel("encoder gradient variance")
        axes[1].set_yscale("log")
        for ax in axes:
            ax.set_xlabel("step")
            ax.grid(True, alpha=0.3)
            ax.legend()
        fig.suptitle("linear VAE, DisARM protocol, MNIST")
        fig.tight_layout()
        fig.savefig(os.path.join(d, "long_curves.png"), dpi=100)
        out += ["", "Curves: `long_curves.png`."]
    return out


def gating_table(d):
    out = ["", "## Gating (Bengio, Léonard & Courville 2013 protocol; 10% of 2000 gates open; threshold chosen on "
           "validation)", "",
           "| gater | epochs | best epoch | valid err % | test err % | test open fraction | Hamming between examples | "
           "same class | different class | 2r(1−r) | class contrast | open-prob. spread | test err %, gates at their mean | seconds |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in ("straight_through", "reinforce_optimal", "stochastic_times_smooth", "sigmoid", "sigmoid_noise",
              "noisy_rectifier", "rectifier"):
        s = load(d, f"gating_{g}")
        if s is None:
            out.append(f"| {g} | (no summary) |" + " |" * 11)
            continue
        out.append(f"| {g} | {s['epochs']} | {s['best_epoch']} | {s['valid_error_percent']:.2f} | "
                   f"{s['test_error_percent']:.2f} | {s['test_open_fraction']:.3f} | {s['test_hamming']:.3f} | "
                   f"{s['test_hamming_same_class']:.3f} | {s['test_hamming_different_class']:.3f} | "
                   f"{s['test_hamming_independent']:.3f} | {s['test_class_contrast']:.2f} | "
                   f"{s['validation_open_probability_spread']:.3f} | {s['mean_field_test_error_percent']:.2f} | "
                   f"{s['train_seconds']:.0f} |")
    return out


def main(d):
    long_steps = sorted({e["step"] for n in ("vae_long_disarm_s0", "vae_disarm_s1", "plain_disarm_s0")
                         for e in ((load(d, n) or {}).get("evaluations", []))} |
                        {(load(d, n) or {}).get("steps", 0) for n in ("vae_disarm_s1", "plain_disarm_s0")} - {0})
    short = sorted({e["step"] for n in ("vae_straight_through_sigmoid_s0", "plain_straight_through_sigmoid_s0")
                    for e in ((load(d, n) or {}).get("evaluations", []))} |
                   {(load(d, n) or {}).get("steps", 0) for n in ("vae_straight_through_sigmoid_s0",)} - {0})
    lines = ["# issue 12 device runs", ""] + vae_tables(d, long_steps, short) + speed_table(d) + long_runs(d) + gating_table(d)
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1])
