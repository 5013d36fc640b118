"""The documentation: every module in the API reference, every public name with a docstring, every
tutorial running (tiny configurations). The site itself is built with warnings as errors in CI
(``.ci/run``: ``mkdocs build --strict``)."""
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import stochgrad

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def modules():
    names = ["stochgrad"] + [m.name for m in pkgutil.walk_packages(stochgrad.__path__, "stochgrad.")
                             if not m.name.endswith("__main__")]
    return [importlib.import_module(n) for n in names]


def public_names(module):
    """Functions and classes defined in ``module`` whose names do not start with ``_``, and its ``__all__``."""
    own = {n: o for n, o in vars(module).items() if not n.startswith("_") and
           (inspect.isfunction(o) or inspect.isclass(o)) and o.__module__ == module.__name__}
    for n in getattr(module, "__all__", ()):
        own.setdefault(n, getattr(module, n))
    return own


def test_every_module_is_in_the_api_reference():
    rendered = set()
    for page in (DOCS / "api").glob("*.md"):
        rendered |= set(re.findall(r"^::: (stochgrad[\w.]*)\s*$", page.read_text(), re.M))
    missing = [m.__name__ for m in modules() if m.__name__ not in rendered]
    assert not missing, f"add a '::: NAME' line to a page of docs/api/ for: {missing}"


def test_every_public_name_has_a_docstring():
    missing = [f"{m.__name__}.{n}" for m in modules() for n, o in public_names(m).items()
               if (inspect.isfunction(o) or inspect.isclass(o)) and not (o.__doc__ or "").strip()]
    missing += [f"{m.__name__} (module)" for m in modules() if not (m.__doc__ or "").strip()]
    assert not missing, f"public names without a docstring: {missing}"


def test_no_docstring_cites_files_a_clone_does_not_have():
    for path in (ROOT / "src").rglob("*.py"):
        text = path.read_text()
        for bad in ("DESIGN.md", "NOTES.md", "../shared"):
            assert bad not in text, f"{path.relative_to(ROOT)} cites {bad}: cite the docs pages instead"


TUTORIALS = sorted((DOCS / "tutorials").glob("*.py"))


@pytest.mark.parametrize("script", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_tiny_and_its_page_shows_it(script):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(script), "--tiny"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip()
    page = (script.with_suffix(".md")).read_text()
    assert f'--8<-- "docs/tutorials/{script.name}"' in page                  # the page shows this very script
    output = DOCS / "tutorials" / "output" / f"{script.stem}.txt"
    assert f'--8<-- "docs/tutorials/output/{output.name}"' in page and output.stat().st_size > 100


@pytest.mark.parametrize("script", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorials_set_one_thread_and_say_why(script):
    """Small models run 10-40x slower with torch's default threads on a busy machine: every tutorial sets one
    thread where a reader copies from, with the reason beside it, and the tutorials' index explains it."""
    line = next((line for line in script.read_text().splitlines() if "torch.set_num_threads(1)" in line), "")
    assert line.startswith("torch.set_num_threads(1)") and "#" in line
    assert "## Threads" in (DOCS / "tutorials" / "index.md").read_text()


ROLE = re.compile(r":(func|class|mod|meth|data|attr|exc|obj):`")


def test_no_docstring_uses_sphinx_roles():
    """mkdocstrings renders Sphinx roles as raw text: cross-references are autorefs, ``[`name`][full.path]``."""
    bad = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "src").rglob("*.py"))
           for n, line in enumerate(path.read_text().splitlines(), 1) if ROLE.search(line)]
    assert not bad, f"write [`name`][stochgrad.module.name] (or `name`) instead of a Sphinx role: {bad}"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="the docs extra builds the site")
def test_the_built_api_reference_renders_no_raw_roles_and_leads_with_expect(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    pages = sorted((site / "api").rglob("*.html"))
    assert len(pages) >= 7
    for page in pages:
        text = re.sub(r"<[^>]+>", "", page.read_text())   # what a reader sees
        assert not re.search(r":(func|class|mod|meth|data|attr|exc):", text), page
    functional = (site / "api" / "functional" / "index.html").read_text()
    ids = re.findall(r'<h[1-6][^>]*id="(stochgrad[\w.]*)"', functional)
    assert ids.index("stochgrad.expect.expect") < min(i for i, x in enumerate(ids) if x.startswith("stochgrad.guard"))
    assert 'href="#stochgrad.expect.expect"' in functional   # the table at the top links to it
