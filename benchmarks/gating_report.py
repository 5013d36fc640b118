"""Tables the gating runs under a folder (one sub-folder per gater with summary.json and metrics.csv, as
`stochgrad train gating` writes them): report.md, results.json and valid_error.png (validation error per epoch).

    python benchmarks/gating_report.py benchmarks/results/gating_cpu
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

COLUMNS = [("epochs", "epochs", "{}"), ("best_epoch", "best epoch", "{}"),
           ("test_error_percent", "test err %", "{:.2f}"), ("valid_error_percent", "valid err %", "{:.2f}"),
           ("test_open_fraction", "open at test", "{:.3f}"), ("test_hamming", "Hamming", "{:.3f}"),
           ("test_hamming_independent", "2r(1−r)", "{:.3f}"), ("test_class_contrast", "class contrast", "{:.2f}"),
           ("test_error_percent_gates_of_another_example", "err % through another example's gates", "{:.2f}"),
           ("mean_field_test_error_percent", "err %, gates at their mean", "{:.2f}")]


def main(folder: str) -> None:
    root = Path(folder)
    runs = {}
    for d in sorted(p for p in root.iterdir() if (p / "summary.json").exists()):
        summary = json.loads((d / "summary.json").read_text())
        with open(d / "metrics.csv") as f:
            curve = [(int(r["epoch"]), float(r["valid_error"])) for r in csv.DictReader(f)]
        runs[d.name] = {"summary": summary, "valid_error_per_epoch": curve}
    (root / "results.json").write_text(json.dumps(runs, indent=1) + "\n")
    lines = ["| gater | " + " | ".join(c[1] for c in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, run in runs.items():
        s = run["summary"]
        lines.append(f"| {name} | " + " | ".join(fmt.format(s[k]) if k in s else "–" for k, _, fmt in COLUMNS) + " |")
    (root / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, run in runs.items():
        e, v = zip(*run["valid_error_per_epoch"])
        ax.plot(e, v, marker=".", label=name)
    ax.axhline(2.0, color="k", ls=":", lw=1, label="the paper: < 2% (every gater)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation error %")
    ax.set_title("gating on MNIST: deterministic gates, 10% open", fontsize=10)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    fig.savefig(root / "valid_error.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/gating_cpu")
