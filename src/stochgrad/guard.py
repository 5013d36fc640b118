"""Nothing non-finite enters state, and no value crosses to the host per call: the one design for the call
path's value checks (finite logits, finite losses) shared by ``expect``, the baselines, the layers and
every estimator with state.

Checks come in two kinds:

- **Structure** (types, dtypes, shapes, options) is metadata: checked in Python on every call, before
  anything runs, at no synchronisation cost.
- **Values** are checked on the tensor's device, in one form for every device:

  1. *Guarded updates* ([`fold_`][stochgrad.guard.fold_]): every running statistic is updated as
     ``buffer ← where(ok, new, buffer)`` (or a step scaled by ``ok``), ``ok = isfinite(total)`` of the statistics
     folded in, a 0-dim device flag. A call whose losses are NaN/inf leaves every buffer bitwise as it was, on any
     device, without a synchronisation; an empty batch (a shape, so known on the host) updates nothing.
  2. *Verdicts* ([`Verdict`][stochgrad.guard.Verdict], one per site): the raw value that was checked (a sum: finite iff all was) still
     has to become an error. Where reading a value costs nothing (``HOST_READS``: the CPU, whose tensors live in
     host memory) the failing call itself raises ``ValueError``. On an accelerator the value is copied to pinned
     host memory without blocking and looked at by a later call of the same site once the copy has landed (a CUDA
     event's non-blocking ``query``): the error is raised one or a few calls late, the state having been guarded
     meanwhile, and the GPU pipeline never stalls. The logits' check is two ops a call: the sum and its copy.

A user who would rather drop bad calls than stop sets ``estimator.skip_nonfinite = True``: non-finite
losses are then skipped (the state is unchanged) instead of raised; non-finite logits always raise.
"""
from __future__ import annotations

from math import isfinite
from typing import Callable

import torch
from torch import Tensor
from torch.compiler import is_compiling as _compiling  # (bound once: no attribute lookups per call)

HOST_READS = frozenset({"cpu"})  # device types whose values the host reads without synchronising

LOGITS, LOSSES, TUNING = 1, 2, 4  # the problems a verdict can carry (bits)
MESSAGES = {LOGITS: "must be finite; got NaN or inf", LOSSES: "f returned NaN or inf losses",
            TUNING: "a tuning step came out NaN or inf (its gradient, Adam's moments or the tuned values: losses too large "
                    "for the dtype, or too large a learning rate), so it was not taken"}


def total(x: Tensor) -> Tensor:
    """The sum of ``x`` (detached), 0-dim, accumulated in float64 (float32 where the device has none): finite iff
    every element is (finite float32 values cannot overflow it). The raw value a [`Verdict`][stochgrad.guard.Verdict] takes."""
    if x.dim() == 0 and x.dtype == torch.float64:
        return x
    return x.sum(dtype=torch.float64 if x.device.type != "mps" else torch.float32)


def finite(x: Tensor) -> Tensor:
    """0-dim bool on ``x``'s device (detached): all of ``x`` is finite (one reduction; then ``s − s == 0``, two ops
    where ``isfinite`` takes three)."""
    s = x if x.dim() == 0 else total(x)
    return (s - s) == 0


def fold_(ok: Tensor, *pairs: tuple[Tensor, Tensor]) -> None:
    """``buffer ← new`` for each ``(buffer, new)`` where ``ok``, else unchanged (bitwise). No synchronisation."""
    for buffer, new in pairs:
        torch.where(ok, new, buffer, out=buffer)


def reads_at_once(x: Tensor) -> bool:
    """Whether the host may read ``x``'s values now at no synchronisation cost (its device is in HOST_READS)."""
    return "cpu" in HOST_READS if x.is_cpu else x.device.type in HOST_READS


def check_logits(logits, name: str = "logits", verdict=None, masks: bool = False) -> Tensor:
    """Raises a clear error unless ``logits`` is a floating tensor with a unit dimension and finite values; returns it.

    ``masks``: categorical logits ``(*batch, n, K)``, where ``−inf`` masks a class (probability 0 exactly); then each
    unit needs at least one finite class, and NaN and ``+inf`` stay errors.

    Structure (type, dtype, shape) is checked at once. Values: one reduction, read on the host where that is free
    (the CPU: summed in the logits' dtype, and again in float64 only if that overflowed), otherwise summed in
    float64 (finite float32 values cannot overflow it) and reported through
    ``verdict`` as a device flag (the site's [`Verdict`][stochgrad.guard.Verdict], or ``None``: no check
    off the host). Inside ``torch.compile`` no value is read (a read would break the graph): the guarded updates
    remain. It runs on every call of ``expect`` and of the layers.
    """
    if not isinstance(logits, Tensor) or not logits.dtype.is_floating_point:
        bad_logits(logits, name)
    shape = logits.shape
    if not shape or not shape[-1]:
        bad_logits(logits, name)
    if _compiling():
        return logits
    x = logits.detach()
    if masks:  # per unit: NaN, +inf or every class −inf make its maximum non-finite; −inf classes alone do not
        x = x.amax(-1)
    if reads_at_once(x):   # a sum in the logits' dtype (4x cheaper than float64 at 10^6 elements), and only where
        # it reads inf or NaN the float64 one (finite float32 logits can overflow a float32 sum, never a float64 one)
        if not isfinite(x.sum().item()) and not isfinite(total(x).item()):
            raise ValueError(logits_message(name, masks) + f" (a tensor of shape {tuple(shape)})")
    elif verdict is not None:
        verdict.report(total(x), LOGITS, name)
    return logits


def logits_message(name: str, masks: bool = False) -> str:
    """What bad logit values are called in an error."""
    if masks:
        return (f"{name} must be finite, or −inf for a masked class (every unit needs one finite class); got NaN, "
                "+inf, or a unit whose classes are all −inf")
    return f"{name} must be finite; got NaN or inf"


def bad_logits(logits, name: str):
    """Raises the error for ``logits`` that are not a floating tensor ``(*batch, n)`` with ``n >= 1``."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (*batch, n), got {type(logits).__name__}")
    if not logits.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor (float32 or float64; float16 and bfloat16 are "
                        f"sampled in float32), got dtype {logits.dtype}")
    raise ValueError(f"{name} must have shape (*batch, n) with n >= 1 units, got {tuple(logits.shape)}")


def report_finite(verdict: "Verdict", x: Tensor, problem: int, name: str = "") -> bool | None:
    """Reports to ``verdict`` whether all of ``x`` (detached) is finite: read at once where that is free (the
    CPU: one reduction and a read; returns the answer), else the raw sum as the device's report (returns None)."""
    value = total(x.detach())
    if reads_at_once(value) and not _compiling():
        ok = isfinite(value.item())
        verdict.report(ok, problem, name)
        return ok
    verdict.report(value, problem, name)
    return None


SLOTS = {LOGITS: 0, LOSSES: 1, TUNING: 2}  # where each problem's value lands in the host copy


class Verdict:
    """Turns a site's device-side reports into errors without synchronising (see the module docstring).

    ``report(value, problem, name)``: ``value`` a ``bool`` the caller read on the host, or a 0-dim tensor that is
    finite iff all was well (the raw sum of what was checked, [`total`][stochgrad.guard.total]: no flag is computed for it);
    ``problem``: ``LOGITS``, ``LOSSES`` or ``TUNING``. Off the host the values of calls not yet sent are
    summed (a NaN or inf stays one), copied without blocking to pinned host memory (one copy per problem) and read
    by a later call once the copy has landed. ``skip``: losses and tuning problems are dropped silently (the guarded
    state already ignored them).
    """

    __slots__ = ("pending", "host", "event", "in_flight", "names", "skip")

    def __init__(self, skip: bool = False):
        self.pending: dict[int, Tensor] = {}  # problem → the summed values not yet sent to the host, on the device
        self.host: Tensor | None = None       # their host copy, one float64 per problem (pinned memory on CUDA)
        self.event = None                     # recorded after the copy: query() says it has landed
        self.in_flight = False
        self.names: dict[int, str] = {}
        self.skip = skip

    def report(self, value: "Tensor | bool", problem: int, name: str = "") -> None:
        if problem != LOGITS and self.skip or _compiling():
            return
        if value.__class__ is bool or reads_at_once(value):
            ok = value if value.__class__ is bool else bool(value) if value.dtype == torch.bool else isfinite(value.item())
            if not ok:
                raise ValueError(self._message(problem, name))
            return
        if value.dtype == torch.bool:   # a flag: true when all was well
            value = torch.where(value, 0.0, float("nan"))
        self.names[problem] = name
        before = self.pending.get(problem)
        self.pending[problem] = value if before is None else before + value
        self.poll()

    def poll(self) -> None:
        """Raises what an earlier call found, if its copy has reached the host; sends pending values on."""
        if self.in_flight:
            if not self.event.query():
                return
            self.in_flight = False
            values = self.host.tolist()  # host memory: no synchronisation
            found = [p for p, slot in SLOTS.items() if not isfinite(values[slot])]
            if found:
                self.pending.clear()
                self.host.zero_()
                raise ValueError(" and ".join(self._message(p, self.names.get(p, "")) for p in found)
                                 + " (reported by a later call: on an accelerator the check does not wait for "
                                 "the device; the state ignored the bad call)")
        if self.pending:
            some = next(iter(self.pending.values()))
            cuda = some.device.type == "cuda"
            if self.host is None:
                self.host = torch.zeros(len(SLOTS), dtype=torch.float64, pin_memory=cuda)
                self.host.stochgrad_host_copy = True  # (tests tell these reads from device reads)
                self.event = torch.cuda.Event() if cuda else _Landed()
            for problem, value in self.pending.items():
                self.host[SLOTS[problem]].copy_(value, non_blocking=cuda)
            self.event.record()
            self.in_flight, self.pending = True, {}

    @staticmethod
    def _message(problem: int, name: str) -> str:
        if problem == LOGITS:
            return f"{name or 'logits'} {MESSAGES[LOGITS]}"
        if problem == TUNING:
            return MESSAGES[TUNING] + " (set skip_nonfinite = True on the estimator to skip such steps silently)"
        return MESSAGES[problem] + ": a running statistic would have been poisoned, so this call was not folded " \
                                   "in (set skip_nonfinite = True on the estimator to skip such calls silently)"

    def __deepcopy__(self, memo):
        return Verdict(self.skip)

    def __getstate__(self):
        return {"skip": self.skip}

    def __setstate__(self, state):
        self.__init__(state.get("skip", False))


class _Landed:
    """An 'event' that is always complete: the copy from a device without CUDA events was synchronous."""

    def record(self) -> None:
        pass

    @staticmethod
    def query() -> bool:
        return True


# The input checks of a call: the loss f, the number of samples (the logits: check_logits above).

LOW_PRECISION = (torch.float16, torch.bfloat16)  # sampled and scored in float32

LossFn = Callable[[Tensor], Tensor]
"""A loss: samples ``(*lead, *batch, n)`` in {0, 1} to per-sample losses ``(*lead, *batch)``."""


def check_samples(samples, minimum: int = 1, who: str = "") -> int:
    """``samples`` as a validated int ``>= minimum``; a clear error naming ``who`` otherwise."""
    if isinstance(samples, bool) or not isinstance(samples, int):
        raise TypeError(f"samples must be an int >= {minimum}, got {samples!r}")
    if samples < minimum:
        extra = f" ({who} needs at least {minimum})" if who and minimum > 1 else ""
        raise ValueError(f"samples must be >= {minimum}{extra}, got {samples}")
    return samples


def CheckedLoss(f: LossFn, event_dims: int = 1, dim: int = 2, dtype: torch.dtype | None = None,
                work: torch.dtype | None = None) -> LossFn:
    """Wraps the user's ``f`` in a function that checks every output has shape ``(*lead, *batch)`` = ``b.shape[:-1]``
    (``b.shape[:-2]`` for one-hot categorical samples ``(*lead, *batch, n, K)``: ``event_dims = 2``; ``event_dims``
    is the samples' trailing dimensions, and ``dim`` what the logits' would be with that event).

    One sample is drawn without a sample dimension (the fast path) and ``f`` sees ``(*batch, *event)``;
    only unbatched logits (``dim == event_dims``) get a leading ``(1,)``, so that ``f``'s output shape
    still tells a loss per sample from a reduction over everything. ``dtype``: for low-precision logits,
    the samples (computed in float32) are handed to ``f`` in the logits' dtype (0 and 1 are exact there).
    ``work``: the dtype the estimate runs in (the logits', float32 for low-precision ones); losses in low precision
    or of an integer dtype (a count of class indices) come back in it.

    A closure, not an object with ``__call__``: CPython calls a plain function without a slot lookup, and the
    common case (batched Bernoulli logits in float32/float64) gets the one-comparison check alone.
    """
    if not callable(f):
        raise TypeError(f"f must be callable, mapping (*lead, *batch, n) samples to (*lead, *batch) losses; got {type(f).__name__}")
    if event_dims == 1 and dim != 1 and dtype is None and work is None:  # the common case (Bernoulli units)
        def loss(b: Tensor) -> Tensor:
            out = f(b)
            if not isinstance(out, Tensor) or out.shape != b.shape[:-1]:
                bad_losses(out, b, 1)
            return out
        return loss
    unbatched = dim == event_dims

    def loss(b: Tensor) -> Tensor:
        single = unbatched and b.dim() == event_dims
        x = b.unsqueeze(0) if single else b
        out = f(x if dtype is None or not x.is_floating_point() else x.to(dtype))   # (class indices stay int64)
        if not isinstance(out, Tensor) or out.shape != x.shape[:-event_dims]:
            bad_losses(out, x, event_dims)
        if work is not None and (dtype is not None or not out.is_floating_point()):
            out = out.to(work)
        return out[0] if single else out
    return loss


def bad_losses(out, x: Tensor, event_dims: int):
    """Raises the error for ``f`` returning ``out`` (not losses of shape ``x.shape[:-event_dims]``) at samples ``x``."""
    got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
    units = "n" if event_dims == 1 else "n, K"
    raise ValueError(f"f must return per-sample losses of shape (*lead, *batch) = "
                     f"{tuple(x.shape[:-event_dims])} for samples (*lead, *batch, {units}) of "
                     f"shape {tuple(x.shape)}; got {got}")
