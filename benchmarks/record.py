"""Files a benchmark's outputs as one result: ``benchmarks/results/<benchmark>/<machine>/<date>_<commit>.json``.

A result is one JSON object: ``benchmark``, ``machine`` (a name described in ``results/machines.json``), ``date``
(ISO time of the latest run in it), ``commit`` (the code that latest run measured), ``command`` (how to produce it
again), ``note`` (what a reader needs to know to read the numbers) and ``runs``: ``{label: run}``, where a run is

- a benchmark's own JSON output (``--json`` of ``overhead.py``, ``local_vs_backprop.py``, ``compile_speed.py``, ...),
  labelled by its file name; or
- a training run's folder (``summary.json`` and ``metrics.csv``, as ``stochgrad train`` writes them), labelled by
  the folder's name: ``{"summary": ..., "metrics": {column: [values]}}``.

Date and commit come from the runs' ``environment`` (``stochgrad.runinfo.environment``), else from this checkout.
``benchmarks/report.py`` then writes the tables of ``results/README.md`` and the figures from these files.

    python benchmarks/record.py overhead_bernoulli cpu-2core run1.json run2.json --command "python benchmarks/overhead.py"
    python benchmarks/record.py gating cpu-2core runs/gating/* --command "bash benchmarks/reproduce/gating.sh"
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MACHINES = RESULTS / "machines.json"


def read_metrics(path: Path) -> dict[str, list]:
    """A ``metrics.csv`` as columns; numbers as floats (ints where whole), empty cells as None."""
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}

    def number(text):
        if text in ("", None):
            return None
        value = float(text)
        return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value
    return {k: [number(r[k]) for r in rows] for k in rows[0]}


def read_run(path: Path):
    """One run: a JSON file, or a folder with ``summary.json`` and/or ``metrics.csv``."""
    if path.is_file():
        return json.loads(path.read_text())
    run = {}
    if (path / "summary.json").exists():
        run["summary"] = json.loads((path / "summary.json").read_text())
    if (path / "metrics.csv").exists():
        run["metrics"] = read_metrics(path / "metrics.csv")
    if not run:
        raise SystemExit(f"{path}: neither summary.json nor metrics.csv")
    return run


def environments(obj):
    """Every ``environment`` dict inside ``obj`` (a run or a list of runs), depth first."""
    if isinstance(obj, dict):
        if isinstance(obj.get("environment"), dict):
            yield obj["environment"]
        for value in obj.values():
            yield from environments(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from environments(value)


def stamp(runs) -> tuple[str, str]:
    """``(date, commit)`` of the latest run that records its environment; else now and this checkout's HEAD."""
    dated = sorted((e["date"], e.get("commit") or "") for e in environments(runs) if e.get("date"))
    if dated and dated[-1][1]:
        return dated[-1]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=RESULTS).stdout.strip()
    return (dated[-1][0] if dated else datetime.now(timezone.utc).isoformat(timespec="seconds")), head


def path_for(benchmark: str, machine: str, date: str, commit: str) -> Path:
    return RESULTS / benchmark / machine / f"{date[:10]}_{commit[:7] or 'unknown'}.json"


def save(benchmark: str, machine: str, runs: dict, command: str, note: str = "", date: str = "",
         commit: str = "", extra: dict | None = None) -> Path:
    """Writes one result file and returns its path. ``date``/``commit`` default to :func:`stamp`'s."""
    known = json.loads(MACHINES.read_text()) if MACHINES.exists() else {}
    if machine not in known:
        raise SystemExit(f"unknown machine {machine!r}: describe it in {MACHINES} first (known: {', '.join(known)})")
    if not date or not commit:
        date, commit = (date, commit) if date and commit else stamp(runs)
    out = path_for(benchmark, machine, date, commit)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": benchmark, "machine": machine, "date": date, "commit": commit, "command": command,
              "note": note, **(extra or {}), "runs": runs}
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmark", help="the result's folder name, e.g. overhead_bernoulli")
    p.add_argument("machine", help="a machine named in results/machines.json, e.g. cpu-2core")
    p.add_argument("runs", nargs="+", type=Path, help="JSON outputs, or run folders (summary.json, metrics.csv)")
    p.add_argument("--command", required=True, help="the command that produced the runs")
    p.add_argument("--note", default="", help="what a reader needs to know to read the numbers")
    a = p.parse_args(argv)
    runs = {path.stem if path.is_file() else path.name: read_run(path) for path in a.runs}
    print(os.path.relpath(save(a.benchmark, a.machine, runs, a.command, a.note)))


if __name__ == "__main__":
    main()
