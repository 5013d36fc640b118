"""Every snippet of the README runs as written: the Python blocks in order in one namespace (as a reader
pastes them into one session), the shell blocks parse; and the README stands alone."""
import re
import subprocess
from pathlib import Path

import pytest
import torch

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, re.S)


def test_python_snippets_run_as_written():
    python = [code for lang, code in BLOCKS if lang == "python"]
    assert len(python) >= 2
    namespace: dict = {}
    threads = torch.get_num_threads()   # the snippets set one thread, as a reader's session should
    try:
        for code in python:
            exec(compile(code, "README.md", "exec"), namespace)      # noqa: S102 - the README's own code
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("code", [c for lang, c in BLOCKS if lang == "bash"])
def test_shell_snippets_parse(code):
    done = subprocess.run(["bash", "-n"], input=code, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_readme_stands_alone():
    assert "../shared" not in README and "NOTES.md" not in README and "DESIGN.md" not in README
    for target in re.findall(r"\]\(([^)#]+)\)", README):           # relative links and images exist
        if "://" not in target:
            assert (Path(__file__).resolve().parents[1] / target).exists(), target
