"""What every ``stochgrad train ...`` command shares: safe checkpoints (atomic, checksummed, loaded without
unpickling code, tied to the run's configuration), a metrics CSV, distributed set-up under ``torchrun``,
and the plot of the curves.

A trainer's checkpoint cycle, in four calls::

    ckpt = prepare_out(cfg.out, cfg.resume)            # the folder; stale temp files gone; a fresh run
                                                        # moves an earlier run's checkpoint aside
    state = load_checkpoint(ckpt, asdict(cfg), IDENTITY, cfg.force_resume) if cfg.resume else None
    ...
    stop = diverged(model)                              # a parameter NaN, inf or past float resolution
    save_checkpoint({"step": step, "model": ..., "config": asdict(cfg)}, ckpt)
"""
from __future__ import annotations

import csv
import dataclasses
import errno
import glob
import hashlib
import io
import math
import os
import shutil
import sys

import torch
import torch.distributed as dist


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


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def save_atomic(obj, path: str) -> None:
    """``torch.save`` to memory, then to a temporary file beside ``path``, fsync, atomic rename: a kill
    mid-write leaves the previous file intact, never a truncated one. A failed write removes its
    temporary file and raises :class:`CheckpointError` saying why in words ("no space left")."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getbuffer()
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        _remove_quietly(tmp)
        if isinstance(err, OSError):
            folder = os.path.dirname(os.path.abspath(path))
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                free = shutil.disk_usage(folder).free
                why = f"no space left on the device ({free} bytes free, {len(data)} needed)"
            else:
                why = err.strerror or str(err)
            kept = f"the previous {os.path.basename(path)} is intact" if os.path.exists(path) else "nothing was written"
            raise CheckpointError(f"could not write {path}: {why}; the temporary file was removed and {kept}") from None
        raise
    try:  # make the rename itself durable
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def save_checkpoint(state: dict, path: str) -> None:
    """Writes a checkpoint (a dict with ``"step"``) atomically, with the SHA-256 of its contents beside
    them (key ``"sha256"``). Raises :class:`NonFiniteError` naming the entry, and writes nothing, when
    any value is NaN or inf: a non-finite parameter is never checkpointed."""
    bad = first_non_finite(state)
    if bad is not None:
        raise NonFiniteError(f"{bad} holds NaN or inf")
    save_atomic({**state, CHECKSUM_KEY: payload_digest(state)}, path)


def load_checkpoint(path: str, config: dict | None = None, identity: tuple = (), force: bool = False,
                    defaults: dict | None = None) -> dict:
    """Loads a checkpoint written by :func:`save_checkpoint`, with ``weights_only=True`` (no code is ever
    unpickled), and verifies its checksum. With ``config``, the entries named in ``identity`` must equal
    the stored configuration's, unless ``force``; a setting the stored configuration lacks (one added to
    stochgrad after the checkpoint was written) counts as its value in ``defaults``. Every failure is a :class:`CheckpointError` naming the
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


def prepare_out(out: str, resume: bool, main: bool = True, name: str = "checkpoint.pt") -> str:
    """Creates the output folder and returns the checkpoint's path in it. The main process also removes
    temporary files left by killed writers, and on a fresh run (``resume`` false) moves an earlier
    run's checkpoint to ``<name>.previous``, so that a later ``--resume`` can never adopt it."""
    if os.path.exists(out) and not os.path.isdir(out):
        fail(f"--out {out} is a file, not a folder")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        fail(f"--out {out}: cannot create the folder ({err.strerror})")
    path = os.path.join(out, name)
    if main:
        for tmp in glob.glob(glob.escape(path) + ".tmp.*"):
            pid = tmp.rsplit(".", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                _remove_quietly(tmp)
        if not resume and os.path.exists(path):
            os.replace(path, path + ".previous")
            print(f"stochgrad: a fresh run in {out}: the earlier run's checkpoint was moved to {name}.previous",
                  file=sys.stderr)
    return path


def open_run(cfg, identity: tuple, main: bool = True, force: bool = False) -> tuple[str, dict | None]:
    """How every trainer starts: the output folder ``cfg.out`` (:func:`prepare_out`) and its checkpoint's
    path, and with ``cfg.resume`` the verified checkpoint, whose configuration must match ``cfg`` on the
    ``identity`` fields unless ``force`` (:func:`load_checkpoint`; a clear exit otherwise); ``None`` on a
    fresh run."""
    path = prepare_out(cfg.out, cfg.resume, main)
    if not cfg.resume:
        return path, None
    try:
        defaults = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
        return path, load_checkpoint(path, dataclasses.asdict(cfg), identity, force, defaults)
    except CheckpointError as err:
        fail(str(err))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, path)

    def write(self, **row) -> None:
        """Appends one row (keys: ``fields``); to TensorBoard as well if asked."""
        if self.enabled:
            try:
                with open(self.path, "a", newline="") as fh:
                    csv.DictWriter(fh, fieldnames=self.fields).writerow(row)
            except OSError as err:
                why = "no space left on the device" if err.errno in (errno.ENOSPC, errno.EDQUOT) else err.strerror
                fail(f"could not append to {self.path}: {why}")
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
    """One panel per column ``ys`` of ``rows`` against ``x``, saved to ``path``."""
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
