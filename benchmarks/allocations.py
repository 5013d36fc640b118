"""What one gradient estimate allocates: full-size tensors counted op by op, and peak memory.

At vocabulary scale (logits ``(rows, K)``, ``K`` in the tens of thousands) a categorical estimator is bound by memory
bandwidth: its cost is the number of ``(rows, K)`` tensors it writes and reads. Two measures:

- ``Allocations``, a ``TorchDispatchMode``: every aten op run under it (forward and backward: the autograd
  engine runs its ops in the same mode) is inspected after it ran; an output whose storage is none of its inputs'
  storages is a fresh allocation. Fresh outputs of at least ``full_size`` elements are listed (op, shape, dtype):
  in-place results (``mul_``, ``scatter_``, ``out=``) and views share an input's storage and are not counted, a
  ``(S, rows, K)`` tensor counts once. The live bytes of everything allocated under the mode are followed through
  the storages' lifetimes (a storage's Python object lives exactly as long as the storage), so ``peak_bytes`` is the
  largest amount held at once, at the granularity of ops (an op's internal scratch space is not seen). Eager mode
  only: inside a compiled graph the ops are not dispatched one by one.
- ``peak_memory``: what the system saw, compiled code included. CUDA: ``torch.cuda.max_memory_allocated``
  above the memory allocated at the start. CPU (Linux, glibc): the rise of the process's resident set, its high
  water mark reset first (``/proc/self/clear_refs``), with ``malloc`` set at the start of the process to map every
  block of 256 KiB or more afresh and return it on free (``map_large_blocks``), so that the resident set
  follows the live buffers; ``None`` where that cannot be done. On the CPU it counts the bytes written, where the
  dispatch mode counts the bytes allocated (a buffer allocated and never written in full reads lower here).

    with Allocations(full_size=rows * K) as seen:
        loss(a).backward()
    len(seen.full), seen.peak_bytes
"""
from __future__ import annotations

import ctypes
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode  # the public way to see every op (no public alias)


def _tensors(tree) -> list[torch.Tensor]:
    """The tensors in an op's arguments or results (nested tuples, lists and dicts)."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (tuple, list)):
        return [t for x in tree for t in _tensors(x)]
    if isinstance(tree, dict):
        return [t for x in tree.values() for t in _tensors(x)]
    return []


class Allocations(TorchDispatchMode):
    """Counts fresh full-size outputs of the ops run under it and follows the bytes they hold (module doc).

    Args:
        full_size: the number of elements from which an output counts as full-size (``rows · K``).

    Attributes:
        full: ``(op, shape, dtype)`` of every fresh output of ``full_size`` elements or more, in order.
        peak_bytes: the most bytes held at once by tensors allocated under the mode (any size).
        allocated_bytes: the bytes of all fresh outputs (any size).
    """

    def __init__(self, full_size: int):
        super().__init__()
        self.full_size = int(full_size)
        self.full: list[tuple[str, tuple[int, ...], torch.dtype]] = []
        self.live_bytes = self.peak_bytes = self.allocated_bytes = 0

    def _freed(self, nbytes: int) -> None:
        self.live_bytes -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in _tensors((args, kwargs)) if t.device.type != "meta"}
        fresh = set()
        for t in _tensors(out):
            if t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or ptr in inputs or ptr in fresh:
                continue  # a view or an in-place result (an input's storage), or a second view of one output
            fresh.add(ptr)
            if t.numel() >= self.full_size:
                self.full.append((str(func), tuple(t.shape), t.dtype))
            self.allocated_bytes += nbytes
            self.live_bytes += nbytes
            weakref.finalize(storage, self._freed, nbytes)
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        return out

    def table(self) -> str:
        """The full-size allocations, one line each: ``op shape dtype``."""
        return "\n".join(f"{op} {list(shape)} {str(dtype).replace('torch.', '')}" for op, shape, dtype in self.full)


def count(fn, full_size: int) -> Allocations:
    """Runs ``fn()`` under ``Allocations`` and returns the record."""
    with Allocations(full_size) as seen:
        fn()
    return seen


# ---- the allocator's view ----------------------------------------------------------------------------------------
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # glibc's mallopt parameters
_MAPPED = [False]                              # whether map_large_blocks() took effect in this process


def map_large_blocks(threshold: int = 256 * 2 ** 10) -> bool:
    """glibc: every allocation of ``threshold`` bytes or more mapped afresh and returned to the system when freed
    (and the heap trimmed above ``threshold``), so that the resident set follows the live buffers. Call it once at the
    start of the process, before any large tensor (a block freed into the heap before would serve later requests
    and hide them). Every fresh buffer then costs its page faults: what glibc does by default from 32 MiB on, i.e. at
    every full-size float32 tensor from 64 × 131,072 up. Returns whether it could be set."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        _MAPPED[0] = bool(libc.mallopt(M_MMAP_THRESHOLD, threshold)) and bool(libc.mallopt(M_TRIM_THRESHOLD, threshold))
    except (OSError, AttributeError):
        _MAPPED[0] = False
    return _MAPPED[0]


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_memory(fn, device: torch.device) -> int | None:
    """Bytes by which ``fn()`` raised the memory in use above what it was before the call (module doc): on CUDA the
    allocator's peak (bytes allocated); on the CPU the resident set's (bytes written: a buffer allocated and never
    written is not resident), which needs ``map_large_blocks`` at the start of the process. ``None`` where
    the platform does not tell."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    if device.type != "cpu" or not _MAPPED[0] or not _reset_high_water_mark():
        return None
    base = _status("VmRSS")
    fn()
    return _status("VmHWM") - base
