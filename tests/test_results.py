"""Benchmark results are data: every file under benchmarks/results is ``<benchmark>/<machine>/<date>_<commit>.json``
(+ its figure), the committed README is what ``benchmarks/report.py`` writes from them, it tables the latest result
per benchmark and machine, and the documentation's figures are copies of the kept ones."""
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NAME = re.compile(r"(\d{4}-\d\d-\d\d)_([0-9a-f]{7})\.(json|png)")


load = load_benchmark


@pytest.fixture(scope="module")
def report():
    return load("report")


def test_every_result_file_is_in_the_layout():
    machines = json.loads((RESULTS / "machines.json").read_text())
    for path in RESULTS.rglob("*"):
        rel = path.relative_to(RESULTS)
        if path.is_dir() or rel.as_posix() in ("README.md", "machines.json"):
            continue
        assert len(rel.parts) == 3, f"{rel}: results live at <benchmark>/<machine>/<date>_<commit>.json"
        benchmark, machine, name = rel.parts
        match = NAME.fullmatch(name)
        assert match and machine in machines, f"{rel}: named <date>_<commit>.json (or .png) for a machine described " \
                                              f"in machines.json"
        if match[3] == "png":
            assert path.with_suffix(".json").exists(), f"{rel}: a figure beside its result"
            continue
        result = json.loads(path.read_text())
        assert (result["benchmark"], result["machine"]) == (benchmark, machine), rel
        assert result["date"][:10] == match[1] and result["commit"].startswith(match[2]), rel
        assert result["runs"] and result["command"], rel


def test_the_committed_readme_is_the_generators_output(report):
    assert (RESULTS / "README.md").read_text() == report.render(), \
        "benchmarks/results/README.md is generated: run python benchmarks/report.py"


def test_every_latest_result_has_its_table_and_link(report):
    text = report.render()
    for (benchmark, machine), (path, _) in report.latest().items():
        assert f"[start:{benchmark}-{machine}]" in text and f"]({benchmark}/{machine}/{path.name})" in text


def test_the_generator_tables_the_latest_result_only(report, tmp_path):
    record = load("record")
    shutil.copy(RESULTS / "machines.json", tmp_path / "machines.json")
    record.RESULTS, record.MACHINES = tmp_path, tmp_path / "machines.json"
    (src,) = (RESULTS / "gating_snr" / "cpu-2core").glob("*.json")
    old = json.loads(src.read_text())
    newer = json.loads(json.dumps(old))
    newer["runs"]["reinforce_optimal_epoch30"]["cosine_of_means"] = 0.5
    for result, date, commit in ((old, "2026-01-01T00:00:00+00:00", "aaaaaaa"), (newer, "2026-02-01T00:00:00+00:00", "bbbbbbb")):
        record.save("gating_snr", "cpu-2core", result["runs"], result["command"], date=date, commit=commit)
    text = report.render(tmp_path)
    assert "2026-02-01_bbbbbbb.json" in text and "2026-01-01_aaaaaaa" not in text
    assert "cosine of the two means 0.50" in text


def test_the_documentations_figures_are_the_kept_ones(report):
    for name, key in report.DOCS_FIGURES.items():
        kept = report.latest()[key][0].with_suffix(".png")
        assert (ROOT / "docs" / "results" / name).read_bytes() == kept.read_bytes(), \
            f"docs/results/{name}: run python benchmarks/report.py --figures"
