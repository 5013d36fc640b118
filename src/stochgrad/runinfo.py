"""What produced a result: torch version, threads, the machine (CPU model, cores), git commit and date, recorded in
every JSON file a command writes (``results.json``, ``summary.json``), and the thread count the commands run with.

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

from .files import write_atomic
from .options import THREADS

DEFAULT_THREADS = 1


def set_threads(threads: int) -> int:
    """Sets torch's intra-op threads ([`stochgrad.options.THREADS`][stochgrad.options.THREADS]: 1 … 1024) and returns it."""
    torch.set_num_threads(THREADS.check(threads, "threads"))
    return threads


def git_commit(path: str | None = None) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout holding ``path`` (this package by default); ``(None, None)``
    outside a checkout or without git."""
    where = path or os.path.dirname(os.path.abspath(__file__))
    # --no-optional-locks: `git status` would otherwise refresh the index and take .git/index.lock in the
    # user's checkout, failing a git command they run at the same moment
    git = ["git", "--no-optional-locks"]
    try:
        commit = subprocess.run([*git, "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                                timeout=5).stdout.strip()
        if not commit:
            return None, None
        status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                capture_output=True, text=True, timeout=5).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what `platform` knows), ``""`` if unknown."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores() -> int:
    """The CPU cores this process may run on (its affinity where the system says it, else all of them)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load() -> list[float] | None:
    """The system's load average over 1, 5 and 15 minutes (processes running or waiting for a core), or None."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def environment(date: bool = True) -> dict:
    """``{"torch", "threads", "commit", "dirty", "python", "cuda", "cpu", "cores", "date", "load"}``: one
    JSON-ready dict. ``date=False`` leaves out what the moment decides (the date and the machine's load): what
    remains is fixed by the code, the installation and the machine, so a file that must repeat byte for byte
    (``stochgrad compare``'s ``results.json``) can still name its commit and CPU."""
    commit, dirty = git_commit()
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "commit": commit, "dirty": dirty,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "python": platform.python_version(),
           "cuda": torch.version.cuda if torch.cuda.is_available() else None,
           "cpu": cpu_model(), "cores": cores(), "load": load()}
    if not date:
        del env["date"], env["load"]
    return env


def write_json(path: str, obj: dict, date: bool = True, **dump_options) -> None:
    """Writes ``obj`` with an ``"environment"`` entry ([`environment`][stochgrad.runinfo.environment], with the date and load unless
    ``date=False``) added, to ``path``, atomically ([`stochgrad.files.write_atomic`][stochgrad.files.write_atomic])."""
    write_atomic(path, json.dumps({**obj, "environment": environment(date)}, indent=1, **dump_options))
