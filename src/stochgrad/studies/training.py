"""What every ``stochgrad train ...`` command shares: one run configuration ([`RunConfig`][stochgrad.studies.training.RunConfig]: the settings and
flags every trainer takes), safe checkpoints (atomic, checksummed, loaded without unpickling code, tied to the
run's configuration, their contents checked before use), a metrics CSV, distributed set-up under ``torchrun``,
and the plot of the curves.

A trainer's cycle::

    cfg.validate()                                      # every setting, before anything is read or written
    ckpt, state = open_run(cfg, IDENTITY)               # the folder (a fresh run refuses an earlier run's folder
                                                        # unless cfg.force); with cfg.resume the verified
                                                        # checkpoint, and cfg.steps from it unless given
    if finished(...): return nothing_to_do(cfg, state)  # "already complete": the saved summary
    with restoring(ckpt): model.load_state_dict(state["model"]); step = counter(state, "step")
    ...
    stop_if_diverged(model, step, saved)                # a parameter NaN, inf or past float resolution
    save_checkpoint({"step": step, "model": ..., "config": asdict(cfg)}, ckpt)
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .. import data as D
from ..data import DATASETS
from ..files import OutputError, atomic_file, reason, remove_stale, save_figure_atomic, write_atomic
from ..options import FOLDER, NON_NEGATIVE, NON_NEGATIVE_FLOAT, POSITIVE, POSITIVE_FLOAT, SEED, Options, choice


@dataclass
class RunConfig(Options):
    """The settings every ``stochgrad train`` command takes (its flags of the same names), checked by the same
    kinds ([`stochgrad.options`][stochgrad.options]). A trainer's configuration derives from it, adds its own fields and kinds
    (``OPTIONS`` merge along the classes) and may give these fields other defaults.

    ``steps``: ``None`` is the trainer's [`STEPS`][stochgrad.studies.training.RunConfig.STEPS] on a fresh run, and on ``resume`` the checkpoint's own
    target ([`open_run`][stochgrad.studies.training.open_run]): a resumed run finishes what it started unless told otherwise.
    """

    OPTIONS = {"seed": SEED, "out": FOLDER, "steps": POSITIVE, "batch_size": POSITIVE, "lr": POSITIVE_FLOAT,
               "log_every": POSITIVE, "checkpoint_every": POSITIVE}
    DEFAULTED = ("steps",)
    STEPS = 1000   # a fresh run's steps when none are given

    seed: int = 0
    out: str = "runs/run"
    steps: int | None = None
    batch_size: int = 100
    lr: float = 1e-3
    log_every: int = 100          # steps between rows of metrics.csv
    checkpoint_every: int = 1000  # steps between checkpoints (and one at the end)
    tensorboard: bool = False     # also log metrics to OUT/tensorboard (the tensorboard extra)
    resume: bool = False          # continue exactly from OUT/checkpoint.pt
    force_resume: bool = False    # with resume: continue even when the checkpoint's identity settings differ
    force: bool = False           # a fresh run may replace an earlier run's outputs in OUT
    progress: bool = True


@dataclass
class DataRunConfig(RunConfig):
    """A [`RunConfig`][stochgrad.studies.training.RunConfig] that trains on a dataset ([`stochgrad.data`][stochgrad.data]: mnist, fashion-mnist, digits)."""

    OPTIONS = {"dataset": choice(*DATASETS, words="one of the datasets")}
    dataset: str = "mnist"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or written; the file on disk is left untouched."""


class NonFiniteError(CheckpointError):
    """A state holding NaN or inf: it is never written as a checkpoint."""


CHECKSUM_KEY = "sha256"


def _walk(obj, key: str = ""):
    """``(key path, leaf)`` for every leaf of nested dicts / lists / tuples."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{key}.{k}" if key else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{key}[{i}]")
    else:
        yield key, obj


def payload_digest(obj) -> str:
    """SHA-256 of a checkpoint's contents: every key, every tensor's dtype, shape and bytes, every plain
    value. Computed on what is saved and again on what is loaded, so any flipped byte that survives
    ``torch.load`` is caught."""
    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, dict):
            h.update(b"{%d" % len(x))
            for k, v in x.items():
                feed(k)
                feed(v)
        elif isinstance(x, (list, tuple)):
            h.update(b"[%d" % len(x) if isinstance(x, list) else b"(%d" % len(x))
            for v in x:
                feed(v)
        elif isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif x is None or isinstance(x, (bool, int, float, str, bytes)):
            h.update(f"{type(x).__name__}:{x!r};".encode())
        else:
            raise TypeError(f"a checkpoint holds tensors and plain values only; got {type(x).__name__}")

    feed(obj)
    return h.hexdigest()


def first_non_finite(obj) -> str | None:
    """The key path of the first NaN or inf (tensor or float) in nested ``obj``, or None."""
    for key, x in _walk(obj):
        if isinstance(x, torch.Tensor) and (x.is_floating_point() or x.is_complex()):
            if not bool(torch.isfinite(x).all()):
                return key
        elif isinstance(x, float) and not math.isfinite(x):
            return key
    return None


def diverged(module: torch.nn.Module) -> str | None:
    """Names the first parameter that is NaN, inf, or so large (``|p| >= 1/eps`` of its dtype: 8.4e6 in
    float32) that a unit step no longer changes it — a run past that point only produces garbage. None
    when all are sane. One host synchronisation."""
    params = [(n, p) for n, p in module.named_parameters() if p.is_floating_point()]
    if not params:
        return None
    peaks = torch.stack([p.detach().abs().max().float() if p.numel() else p.new_zeros((), dtype=torch.float32)
                         for _, p in params])
    limits = torch.tensor([1 / torch.finfo(p.dtype).eps for _, p in params], device=peaks.device)
    bad = ~(peaks < limits)  # NaN compares False
    if not bool(bad.any()):
        return None
    i = int(bad.nonzero()[0])
    return f"{params[i][0]} (largest |value| {peaks[i].item():.3g})"


def save_atomic(obj, path: str) -> None:
    """``torch.save`` to memory, then to ``path`` by the one atomic writer ([`stochgrad.files`][stochgrad.files]): a kill
    mid-write leaves the previous file intact, never a truncated one. A failed write removes its temporary file
    and raises [`CheckpointError`][stochgrad.studies.training.CheckpointError] saying why in words ("no space left")."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    try:
        with atomic_file(path) as fh:
            fh.write(buf.getbuffer())
    except OutputError as err:
        raise CheckpointError(str(err)) from None


def save_checkpoint(state: dict, path: str) -> None:
    """Writes a checkpoint (a dict with ``"step"``) atomically, with the SHA-256 of its contents beside
    them (key ``"sha256"``). Raises [`NonFiniteError`][stochgrad.studies.training.NonFiniteError] naming the entry, and writes nothing, when
    any value is NaN or inf: a non-finite parameter is never checkpointed."""
    bad = first_non_finite(state)
    if bad is not None:
        raise NonFiniteError(f"{bad} holds NaN or inf")
    save_atomic({**state, CHECKSUM_KEY: payload_digest(state)}, path)


def load_checkpoint(path: str, config: dict | None = None, identity: tuple = (), force: bool = False,
                    defaults: dict | None = None) -> dict:
    """Loads a checkpoint written by [`save_checkpoint`][stochgrad.studies.training.save_checkpoint], with ``weights_only=True`` (no code is ever
    unpickled), and verifies its checksum. With ``config``, the entries named in ``identity`` must equal
    the stored configuration's, unless ``force``; a setting the stored configuration lacks (one added to
    stochgrad after the checkpoint was written) counts as its value in ``defaults``. Every failure is a [`CheckpointError`][stochgrad.studies.training.CheckpointError] naming the
    file; the file is left as it is."""
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint to resume from at {path}")
    keep = "it was left as it is: remove it or point --out elsewhere"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several kinds for a damaged or hostile file
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise CheckpointError(f"checkpoint {path} holds objects other than tensors and plain values "
                                  f"(possibly code); refused to load it ({keep})") from None
        raise CheckpointError(f"checkpoint {path} is corrupted or unreadable ({type(err).__name__}: {first}); "
                              f"{keep}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"checkpoint {path} is not a stochgrad checkpoint; {keep}")
    stored = state.pop(CHECKSUM_KEY, None)
    if stored is None:
        raise CheckpointError(f"checkpoint {path} has no checksum (not written by this version of stochgrad); {keep}")
    try:
        actual = payload_digest(state)
    except TypeError as err:
        raise CheckpointError(f"checkpoint {path} is corrupted ({err}); {keep}") from None
    if actual != stored:
        raise CheckpointError(f"checkpoint {path} is corrupted: its contents do not match the checksum stored "
                              f"with them; {keep}")
    if config is not None:
        saved = {**(defaults or {}), **(state.get("config") or {})}
        diff = [k for k in identity if saved.get(k) != config.get(k)]
        if diff and not force:
            was = ", ".join(f"{k}={saved.get(k)!r}" for k in diff)
            now = ", ".join(f"{k}={config.get(k)!r}" for k in diff)
            raise CheckpointError(f"checkpoint {path} was written by a run with {was}; this command asks {now}: "
                                  "resume with the same settings, or pass --force-resume to continue it with these")
    return state


#: what a trainer writes in its folder: a fresh run refuses a folder holding any of them (unless forced)
RUN_FILES = ("checkpoint.pt", "metrics.csv", "summary.json", "curves.png", "samples.png", "tensorboard")


def prepare_out(out: str, resume: bool, main: bool = True, name: str = "checkpoint.pt", force: bool = False) -> str:
    """Creates the output folder and returns the checkpoint's path in it. The main process also removes
    temporary files left by killed writers. A fresh run (``resume`` false) refuses a folder holding an earlier
    run's outputs ([`RUN_FILES`][stochgrad.studies.training.RUN_FILES]) unless ``force``; forced, it moves the earlier checkpoint to
    ``<name>.previous`` (an older ``.previous`` is kept as ``.previous.2``, ``.3``, …), so that a later
    ``--resume`` can never adopt it and no checkpoint is lost."""
    if os.path.exists(out) and not os.path.isdir(out):
        fail(f"--out {out} is a file, not a folder")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        fail(f"--out {out}: cannot create the folder ({reason_words(err)})")
    path = os.path.join(out, name)
    if main:
        remove_stale(out)
        if not resume:
            earlier = [f for f in RUN_FILES if os.path.lexists(os.path.join(out, f))]
            if earlier and not force:
                fail(f"{out} holds an earlier run ({', '.join(earlier)}): --resume to continue it, --force to "
                     "replace it, or choose another --out")
            if os.path.lexists(path):
                keep, k = path + ".previous", 1
                if os.path.lexists(keep):   # the slip before this one: kept too
                    while os.path.lexists(f"{keep}.{k + 1}"):
                        k += 1
                    os.replace(keep, f"{keep}.{k + 1}")
                os.replace(path, keep)
                print(f"stochgrad: a fresh run in {out} (--force): the earlier run's checkpoint was moved to "
                      f"{name}.previous", file=sys.stderr)
    return path


def reason_words(err: OSError) -> str:
    """Words for an ``OSError`` ([`stochgrad.files.reason`][stochgrad.files.reason])."""
    return reason(err)


def open_run(cfg: RunConfig, identity: tuple, main: bool = True) -> tuple[str, dict | None]:
    """How every trainer starts: the output folder ``cfg.out`` ([`prepare_out`][stochgrad.studies.training.prepare_out], ``cfg.force``) and its
    checkpoint's path, and with ``cfg.resume`` the verified checkpoint, whose configuration must match ``cfg`` on
    the ``identity`` fields unless ``cfg.force_resume`` ([`load_checkpoint`][stochgrad.studies.training.load_checkpoint]; a clear exit otherwise); ``None``
    on a fresh run. ``cfg.steps`` left ``None`` becomes the checkpoint's own target on a resumed run and the
    trainer's [`STEPS`][stochgrad.studies.training.RunConfig.STEPS] on a fresh one."""
    path = prepare_out(cfg.out, cfg.resume, main, force=getattr(cfg, "force", False))
    state = None
    if cfg.resume:
        try:
            defaults = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
            state = load_checkpoint(path, dataclasses.asdict(cfg), identity, getattr(cfg, "force_resume", False),
                                    defaults)
        except CheckpointError as err:
            fail(str(err))
        saved = state.get("config") if isinstance(state.get("config"), dict) else {}
        for target in getattr(cfg, "TARGETS", ("steps",)):
            if getattr(cfg, target, 0) is None and isinstance(saved.get(target), int):
                setattr(cfg, target, saved[target])
    for target, default in getattr(cfg, "TARGET_DEFAULTS", {"steps": getattr(cfg, "STEPS", None)}).items():
        if getattr(cfg, target, 0) is None:
            setattr(cfg, target, default)
    return path, state


def nothing_to_do(cfg: RunConfig, state: dict, where: str) -> dict | None:
    """On a resumed run whose checkpoint already reached its target (``where``: e.g. ``"step 300 of 300"``):
    says so and returns the run's ``summary.json`` when that summary belongs to this checkpoint; ``None`` when
    the final evaluation is still to be done (the run was stopped before it)."""
    summary_path = os.path.join(cfg.out, "summary.json")
    try:
        with open(summary_path) as fh:
            summary = json.load(fh)
    except (OSError, ValueError):
        return None
    if summary.get("steps") != state.get("step"):
        return None
    summary.pop("environment", None)
    print(f"stochgrad: {cfg.out} is already complete ({where}): nothing to do; its summary: {summary_path} "
          "(a larger --steps continues it)")
    return summary


@contextlib.contextmanager
def restoring(path: str):
    """Wraps a trainer's reading of a verified checkpoint: contents that do not fit this run (a missing entry,
    another shape, a negative step: a valid checksum over the wrong contents) stop with a clear error naming the
    file, which is left as it is, instead of a traceback or a silently wrong run."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [""]
        first = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]   # "Error(s) in loading ...:" + the first
        first = first if len(first) <= 240 else first[:237] + "..."
        fail(f"checkpoint {path} does not fit this command's model and settings ({type(err).__name__}: {first}); "
             "it was left as it is: remove it or point --out elsewhere")


def counter(state: dict, key: str) -> int:
    """``state[key]`` checked to be an integer >= 0 (a step, an epoch): inside [`restoring`][stochgrad.studies.training.restoring]."""
    return NON_NEGATIVE.check(state[key], key)


def clock(state: dict, key: str = "seconds") -> float:
    """``state[key]`` checked to be a finite number >= 0 (training time): inside [`restoring`][stochgrad.studies.training.restoring]."""
    return float(NON_NEGATIVE_FLOAT.check(state[key], key))


def stop_if_diverged(model: torch.nn.Module, step: int, saved: int | None, bar=None) -> None:
    """Stops the run, with the words every trainer uses, when a parameter of ``model`` diverged ([`diverged`][stochgrad.studies.training.diverged])."""
    bad = diverged(model)
    if bad is not None:
        stop_training(f"training diverged by step {step}: parameter {bad} (lower --lr)", saved, bar)


def stop_training(why: str, saved: int | None, bar=None) -> None:
    """Exits with ``why``, saying which checkpoint is kept (``saved``: its step, ``None``: none was written);
    closes the progress ``bar`` first."""
    if bar is not None:
        bar.close()
    kept = f"the last good checkpoint (step {saved}) is kept" if saved is not None else "no checkpoint was written"
    fail(f"{why}: training stopped; {kept}")


class Metrics:
    """Rows appended to ``DIR/metrics.csv``. A fresh run starts the file; a resumed one keeps exactly
    the complete rows up to the checkpoint's step (a row cut short by a kill is dropped), rewritten
    atomically.

    With ``tensorboard=True`` every numeric field of a row is also logged as a TensorBoard scalar at the
    row's ``step``, in ``DIR/tensorboard`` (the ``tensorboard`` extra; on resume, events past the
    checkpoint's step are purged too). ``enabled=False`` (ranks other than 0) writes nothing.
    """

    def __init__(self, path: str, fields: list[str], resume_step: int | None = None, enabled: bool = True,
                 tensorboard: bool = False):
        self.path, self.fields, self.enabled = path, fields, enabled
        self.writer = None
        if not enabled:
            return
        if tensorboard:
            self.writer = tensorboard_writer(os.path.join(os.path.dirname(path) or ".", "tensorboard"),
                                             None if resume_step is None else resume_step + 1)
        rows = []
        if resume_step is not None and os.path.exists(path):
            with open(path, newline="") as fh:
                text = fh.read()
            lines = text.splitlines(keepends=True)
            if lines and not lines[-1].endswith("\n"):
                lines.pop()  # the last row was cut short
            for r in csv.DictReader(lines):
                try:
                    complete = all(r.get(k) not in (None, "") for k in fields) and None not in r
                    if complete and int(r["step"]) <= resume_step:
                        rows.append(r)
                except ValueError:
                    pass
        text = io.StringIO()
        w = csv.DictWriter(text, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
        try:
            write_atomic(path, text.getvalue())
        except OutputError as err:
            fail(str(err))

    def write(self, **row) -> None:
        """Appends one row (keys: ``fields``); to TensorBoard as well if asked."""
        if self.enabled:
            try:
                with open(self.path, "a", newline="") as fh:
                    csv.DictWriter(fh, fieldnames=self.fields).writerow(row)
            except OSError as err:
                fail(f"could not append to {self.path}: {reason_words(err)}")
            if self.writer is not None:
                for key, value in row.items():
                    if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                        self.writer.add_scalar(key, value, int(row["step"]))
                self.writer.flush()

    def read(self) -> list[dict]:
        with open(self.path) as fh:
            return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def tensorboard_writer(log_dir: str, purge_step: int | None = None):
    """A ``torch.utils.tensorboard.SummaryWriter`` in ``log_dir``; a clear error if the optional
    ``tensorboard`` package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        fail("--tensorboard needs the tensorboard package: pip install -e \".[tensorboard]\" (or pip install tensorboard)")
    return SummaryWriter(log_dir=log_dir, purge_step=purge_step)


def distributed_from_env() -> tuple[int, int]:
    """``(rank, world)``: initialises a gloo/nccl process group when launched by ``torchrun``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and os.environ.get("STOCHGRAD_NCCL") else "gloo")
    return dist.get_rank(), world


def all_mean(x: float) -> float:
    """The mean of ``x`` over the ranks of a running process group (``x`` itself otherwise)."""
    if dist.is_available() and dist.is_initialized():
        t = torch.tensor([x], dtype=torch.float64)
        dist.all_reduce(t)
        return t.item() / dist.get_world_size()
    return x


def fail(message: str) -> None:
    """Prints ``stochgrad: message`` to stderr and exits with status 2."""
    print(f"stochgrad: {message}", file=sys.stderr)
    raise SystemExit(2)


def datasets_or_fail(name: str):
    """``(train, test)`` of a dataset, or a clear exit naming the valid ones / what to install."""
    if name not in D.DATASETS:
        fail(f"unknown dataset {name!r}; valid: {', '.join(D.DATASETS)}")
    try:
        return D.load(name, "train"), D.load(name, "test")
    except D.DatasetUnavailable as err:
        fail(str(err))


def save_figure(fig, axes, path: str, legend: bool = False, dpi: int = 110) -> None:
    """Legend beside the last panel (if asked), tight layout, save atomically ([`stochgrad.files`][stochgrad.files]), close."""
    import matplotlib.pyplot as plt

    if legend:
        axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    try:
        save_figure_atomic(fig, path, dpi=dpi)
    finally:
        plt.close(fig)


def plot_curves(path: str, rows: list[dict], x: str, ys: list[str], title: str) -> None:
    """One panel per column ``ys`` of ``rows`` against ``x``, saved to ``path``; points are marked when there are
    few of them (one logged row still shows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ys), figsize=(5 * len(ys), 3.8), squeeze=False)
    for ax, y in zip(axes[0], ys):
        pts = [(r[x], r[y]) for r in rows if y in r and math.isfinite(r[y])]
        if pts:
            ax.plot(*zip(*pts), marker="o" if len(pts) <= 30 else None, ms=4)
        else:
            ax.text(0.5, 0.5, "no finite values logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(True, alpha=0.3)
        if y.endswith("variance") and pts and min(v for _, v in pts) > 0:
            ax.set_yscale("log")
    fig.suptitle(title)
    save_figure(fig, axes[0], path, dpi=100)
