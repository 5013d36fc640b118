"""The documentation: every module in the API reference, every public name with a docstring, every
tutorial running (tiny configurations). The site itself is built with warnings as errors in CI
(``.ci/run``: ``mkdocs build --strict``)."""
import importlib
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
