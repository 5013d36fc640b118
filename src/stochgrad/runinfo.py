"""What produced a result: torch version, threads, git commit and date, recorded in every JSON file a
command writes (``results.json``, ``summary.json``), and the thread count the commands run with.

The tensors of stochgrad's studies are tiny: one intra-op thread is the fastest setting on a shared
machine (two threads on two loaded cores made ``stochgrad compare`` 14 times slower), hence
``DEFAULT_THREADS = 1``; ``--threads`` raises it for large models.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess

import torch

DEFAULT_THREADS = 1


def set_threads(threads: int) -> int:
    """Sets torch's intra-op threads (``>= 1``) and returns it."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    torch.set_num_threads(threads)
    return threads


def git_commit(path: str | None = None) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout holding ``path`` (this package by default); ``(None, None)``
    outside a checkout or without git."""
    where = path or os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                                timeout=5).stdout.strip()
        if not commit:
            return None, None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                capture_output=True, text=True, timeout=5).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def environment(date: bool = True) -> dict:
    """``{"torch", "threads", "commit", "dirty", "date", "python", "cuda"}``: one JSON-ready dict.
    ``date=False`` leaves the date out: what remains is fixed by the code and the installation, so a file
    that must repeat byte for byte (``stochgrad compare``'s ``results.json``) can still name its commit."""
    commit, dirty = git_commit()
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "commit": commit, "dirty": dirty,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "python": platform.python_version(),
           "cuda": torch.version.cuda if torch.cuda.is_available() else None}
    if not date:
        del env["date"]
    return env


def write_json(path: str, obj: dict, date: bool = True, **dump_options) -> None:
    """Writes ``obj`` with an ``"environment"`` entry (:func:`environment`, with the date unless
    ``date=False``) added, to ``path``."""
    with open(path, "w") as fh:
        json.dump({**obj, "environment": environment(date)}, fh, indent=1, **dump_options)
