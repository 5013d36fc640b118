"""What every ``stochgrad train ...`` command shares: atomic checkpoints, a metrics CSV, distributed
set-up under ``torchrun``, and the plot of the curves."""
from __future__ import annotations

import csv
import math
import os
import sys

import torch
import torch.distributed as dist


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read; it is left untouched."""


def save_atomic(obj, path: str) -> None:
    """``torch.save`` to a temporary file beside ``path``, then an atomic rename: a kill mid-write leaves
    the previous checkpoint intact, never a truncated one."""
    tmp = f"{path}.tmp.{os.getpid()}"
    torch.save(obj, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str) -> dict:
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint to resume from at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several kinds for a damaged file
        raise CheckpointError(f"checkpoint {path} is corrupted or unreadable ({type(err).__name__}: {err}); "
                              "it was left as it is: remove it or point --out elsewhere") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"checkpoint {path} is not a stochgrad checkpoint")
    return state


class Metrics:
    """Rows appended to ``DIR/metrics.csv``; on resume, rows past the checkpoint's step are dropped."""

    def __init__(self, path: str, fields: list[str], resume_step: int | None = None, enabled: bool = True):
        self.path, self.fields, self.enabled = path, fields, enabled
        if not enabled:
            return
        rows = []
        if resume_step is not None and os.path.exists(path):
            with open(path) as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    def write(self, **row) -> None:
        if self.enabled:
            with open(self.path, "a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=self.fields).writerow(row)

    def read(self) -> list[dict]:
        with open(self.path) as fh:
            return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def distributed_from_env() -> tuple[int, int]:
    """``(rank, world)``: initialises a gloo/nccl process group when launched by ``torchrun``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and os.environ.get("STOCHGRAD_NCCL") else "gloo")
    return dist.get_rank(), world


def all_mean(x: float) -> float:
    if dist.is_available() and dist.is_initialized():
        t = torch.tensor([x], dtype=torch.float64)
        dist.all_reduce(t)
        return t.item() / dist.get_world_size()
    return x


def fail(message: str) -> None:
    print(f"stochgrad: {message}", file=sys.stderr)
    raise SystemExit(2)


def datasets_or_fail(name: str):
    """``(train, test)`` of a dataset, or a clear exit naming the valid ones / what to install."""
    from .. import data as D

    if name not in D.DATASETS:
        fail(f"unknown dataset {name!r}; valid: {', '.join(D.DATASETS)}")
    try:
        return D.load(name, "train"), D.load(name, "test")
    except D.DatasetUnavailable as err:
        fail(str(err))


def save_figure(fig, axes, path: str, legend: bool = False, dpi: int = 110) -> None:
    """Legend beside the last panel (if asked), tight layout, save, close."""
    import matplotlib.pyplot as plt

    if legend:
        axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def plot_curves(path: str, rows: list[dict], x: str, ys: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ys), figsize=(5 * len(ys), 3.8), squeeze=False)
    for ax, y in zip(axes[0], ys):
        pts = [(r[x], r[y]) for r in rows if y in r and math.isfinite(r[y])]
        if pts:
            ax.plot(*zip(*pts))
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(True, alpha=0.3)
        if y.endswith("variance") and pts and min(v for _, v in pts) > 0:
            ax.set_yscale("log")
    fig.suptitle(title)
    save_figure(fig, axes[0], path, dpi=100)
