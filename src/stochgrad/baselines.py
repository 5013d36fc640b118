"""Baselines for the score-function estimator (seed Corollary 1): explicit state, read before update.

A baseline maps ``(score, losses)`` of one estimate, ``score = h − σ(a)`` of shape ``(*lead, *batch, n)``
and ``losses`` ``(*lead, *batch)`` (``lead`` empty for one sample, else ``(S,)``), to ``c`` broadcastable
to ``score`` (``None`` for no baseline), used in ``(h − σ(a))·(L − c)``.
Corollary 1 keeps the estimator unbiased only if ``c`` does not depend on the current sample, so [`Baseline.forward`][stochgrad.baselines.Baseline.forward] reads state built from past
losses (or, for leave-one-out, from the *other* samples), and [`Baseline.update`][stochgrad.baselines.Baseline.update] folds the
current losses in afterwards, guarded ([`stochgrad.guard.fold_`][stochgrad.guard.fold_]): a call whose statistics are
NaN/inf, or an empty batch, changes nothing; ``update`` returns the device flag for the caller's verdict.
State lives in buffers: ``state_dict``, ``.to(device)`` and checkpoints work, and every statistic is
averaged over ranks under ``torch.distributed``.
"""
from __future__ import annotations


import torch
from torch import Tensor, nn

from .distributed import is_distributed, mean_over_ranks
from .options import DECAY
from .guard import finite, fold_, total


class ResizableBuffers(nn.Module):
    """Buffers whose size follows the number of units, fixed by first use or by a loaded ``state_dict``.

    A freshly built module holds empty buffers; loading a used one's ``state_dict`` adopts its shapes,
    so checkpoints resume whatever the number of units.
    """

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        for name, buf in self.named_buffers(recurse=False):
            incoming = state_dict.get(prefix + name)
            if incoming is not None and (incoming.shape, incoming.dtype) != (buf.shape, buf.dtype):
                setattr(self, name, torch.zeros(incoming.shape, dtype=incoming.dtype, device=buf.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _follow(self, like: Tensor, *names: str) -> None:
        """Moves buffers ``names`` to the dtype and device of ``like`` (the logits'), keeping their values."""
        for name in names:
            buf = getattr(self, name)
            if buf.dtype != like.dtype or buf.device != like.device:
                setattr(self, name, buf.to(dtype=like.dtype, device=like.device))

    def _sized(self, n: int, like: Tensor, *names: str) -> None:
        """Gives buffers ``names`` (registered empty, ``(0, *rest)``) ``n`` units of zeros, ``(n, *rest)``,
        on first use; later, insists on the same ``n``."""
        for name in names:
            buf = getattr(self, name)
            if buf.shape[0] == 0:
                setattr(self, name, torch.zeros(n, *buf.shape[1:], dtype=like.dtype, device=like.device))
            elif buf.shape[0] != n:
                raise ValueError(f"{type(self).__name__} tracks {buf.shape[0]} units but got {n}: "
                                 "keep one estimator object per stochastic site")
        self._follow(like, *names)


class Baseline(ResizableBuffers):
    """No baseline: ``c = 0`` (seed Theorem 1).

    ``reads_score``: whether ``forward``/``centred``/``update`` read the score ``h − σ(a)``. A baseline that does
    not (one ``c`` per sample, as here, the moving average and leave-one-out) is called with ``score=None`` when an
    estimate has several samples, and the estimator never makes the ``(S, *batch, n)`` score
    ([`score_gradient`][stochgrad.estimators.base.ScoreFunction.score_gradient]). Subclasses read it unless they
    say otherwise.
    """

    reads_score = True

    def forward(self, score: Tensor, losses: Tensor) -> Tensor | None:
        return None

    def centred(self, score: Tensor, losses: Tensor, scale: float | None = None) -> Tensor:
        """``L − c``, ``(*lead, *batch, 1)`` or, for a per-unit ``c``, ``(*lead, *batch, n)``: what multiplies the
        score in ``(h − σ(a))·(L − c)``. Reads the state only (Corollary 1: before [`update`][stochgrad.baselines.Baseline.update]). With ``scale``:
        ``(L − c)·scale``, formed as ``L·scale − c·scale`` on the vectors (no pass over a ``(*batch, n)`` result)."""
        c = self.forward(score, losses)
        if scale is None:
            return losses.unsqueeze(-1) if c is None else losses.unsqueeze(-1) - c
        scaled = losses.unsqueeze(-1) * scale
        return scaled if c is None else torch.sub(scaled, c, alpha=scale)   # L·s − s·c, one broadcast pass

    def update(self, score: Tensor, losses: Tensor) -> Tensor | None:
        """Folds the current losses in, guarded; returns what the site's [`Verdict`][stochgrad.guard.Verdict] takes (a
        0-dim tensor, finite iff the call was folded in), ``None`` if nothing was folded."""
        return None


def per_sample(baseline: Baseline) -> bool:
    """Whether ``baseline`` gives one ``c`` per sample without reading the score (the no-baseline itself, or a
    subclass that says so with ``reads_score = False``)."""
    return type(baseline) is Baseline or not baseline.reads_score


class MovingAverage(Baseline):
    """``c`` = exponential moving average of past losses (seed Corollary 1), one scalar per site.

    Bias-corrected like Adam's moments, so the first steps are not pulled toward zero, and stored that way:
    the buffer ``mean`` *is* ``c`` (zero before the first update) and ``weight`` = ``1 − decay^t``. One
    update is one in-place EMA step, ``mean ← lerp(mean, L̄, (1 − decay)/weight)`` (the same ``c`` as
    dividing the raw average by ``weight``). Guarded on every device in one form: a NaN/inf mean loss makes the
    step 0, and both buffers stay bitwise as they were ([`stochgrad.guard`][stochgrad.guard]).
    """

    _version = 2  # version 1 stored the raw average (c = mean / weight): converted on load
    reads_score = False

    def __init__(self, decay: float = 0.9):
        super().__init__()
        self.decay = float(DECAY.check(decay, "decay"))
        self.register_buffer("mean", torch.zeros(()))    # c, bias-corrected
        self.register_buffer("weight", torch.zeros(()))  # 1 − decay^steps: the bias correction
        # (constants as 0-dim tensors: no Python number enters a tensor op as an op of its own)
        self.register_buffer("one", torch.ones(()), persistent=False)            # what weight moves toward
        self.register_buffer("keep", torch.tensor(1 - self.decay), persistent=False)   # 1 − decay

    def _ready(self, losses) -> Tensor:
        """The buffer ``mean``, in the losses' dtype and device (``weight`` with it)."""
        mean = self.mean
        if mean.dtype is not losses.dtype or self.keep.dtype is not losses.dtype or mean.device != losses.device:
            self._follow(losses, "mean", "weight", "one", "keep")
            mean = self.mean
        return mean

    def forward(self, score, losses):
        return self._ready(losses)  # the live buffer: read it before update() (Corollary 1 reads, then folds in)

    def update(self, score, losses):
        count = losses.numel()
        if count == 0 and not is_distributed():  # (under torch.distributed an empty rank still joins the mean)
            return None
        losses = losses.detach()
        mean, weight = self._ready(losses), self.weight
        m = mean_over_ranks(losses.mean(), count)
        w = weight.lerp(self.one, self.keep)          # 1 − decay^t (≥ 1 − decay > 0: no division by zero)
        fold_(finite(m), (mean, mean.lerp(m, self.keep / w)), (weight, w))   # a NaN/inf m: both stay bitwise
        return m

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        if (local_metadata.get("version") or 1) < 2 and prefix + "mean" in state_dict:  # raw average → c
            raw, weight = state_dict[prefix + "mean"], state_dict.get(prefix + "weight")
            if weight is not None:
                state_dict[prefix + "mean"] = torch.where(weight > 0, raw / weight.clamp_min(1e-30), 0.0)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"decay={self.decay}"


class OptimalBaseline(Baseline):
    """Per-unit variance-minimising baseline of seed Eq. 7: ``c_i = E[(h_i − σ_i)² L] / E[(h_i − σ_i)²]``.

    Numerator and denominator are separate moving averages per unit (decay 0.9 as in the follow-up
    paper). Both start at zero with the same decay, so their ratio needs no bias correction.
    Buffers ``numerator``, ``denominator``: ``(n,)``.
    """

    def __init__(self, decay: float = 0.9):
        super().__init__()
        self.decay = float(DECAY.check(decay, "decay"))
        self.register_buffer("numerator", torch.zeros(0))
        self.register_buffer("denominator", torch.zeros(0))

    def _ready(self, score, losses) -> tuple[Tensor, Tensor]:
        """The buffers ``(numerator, denominator)``, sized for ``score``'s units, in the losses' dtype and device."""
        num, den = self.numerator, self.denominator
        if num.shape[0] != score.shape[-1] or num.dtype is not losses.dtype or num.device != losses.device:
            self._sized(score.shape[-1], losses, "numerator", "denominator")
            num, den = self.numerator, self.denominator
        return num, den

    def forward(self, score, losses):
        num, den = self._ready(score, losses)
        return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), 0.0)

    def statistics(self, score, losses) -> tuple[Tensor, Tensor] | None:
        """This call's ``(E[(h − σ)² L], E[(h − σ)²])`` per unit over the examples of all ranks; ``None`` if empty."""
        per_unit = score.square().reshape(-1, score.shape[-1])
        count = per_unit.shape[0]
        if count == 0 and not is_distributed():  # (under torch.distributed an empty rank still joins the mean)
            return None
        if count == 1 and not is_distributed():  # one example: its own statistics, no reduction
            den = per_unit[0]
            return den * losses.reshape(()), den
        num, den = (per_unit * losses.reshape(-1, 1)).mean(0), per_unit.mean(0)
        if is_distributed():   # one all_reduce for both
            num, den = mean_over_ranks(torch.stack([num, den]), count).unbind(0)
        return num, den

    def fold(self, stats, ok) -> None:
        """Folds ``stats`` into the moving numerator and denominator where the 0-dim ``ok`` (device-side guard)."""
        keep = 1 - self.decay
        fold_(ok, (self.numerator, self.numerator.lerp(stats[0], keep)),
              (self.denominator, self.denominator.lerp(stats[1], keep)))

    def update(self, score, losses):
        if score.requires_grad or losses.requires_grad:  # (cheaper than torch.no_grad() around the update)
            score, losses = score.detach(), losses.detach()
        stats = self.statistics(score, losses)
        if stats is None:
            return None
        self._ready(score, losses)
        # NaN/inf in the losses reaches the numerator (x·NaN, 0·inf are NaN); the denominator is a mean of
        # (h − σ)² ∈ [0, 1]
        value = total(stats[0])
        self.fold(stats, finite(value))
        return value

    def extra_repr(self) -> str:
        return f"decay={self.decay}, units={self.numerator.numel()}"


def leave_one_out_mean(x: Tensor) -> Tensor:
    """``out[s]`` = mean of ``x`` over the *other* ``S − 1`` entries of the leading (sample) dimension."""
    return (x.sum(0, keepdim=True) - x) / (x.shape[0] - 1)


class LeaveOneOut(Baseline):
    """``c`` for sample ``s`` = mean loss of the *other* ``S − 1`` samples of the same example (needs ``S ≥ 2``)."""

    reads_score = False

    def forward(self, score, losses):
        return leave_one_out_mean(losses).unsqueeze(-1)

    def centred(self, score, losses, scale=None):
        d = losses - leave_one_out_mean(losses)   # one view less than the generic form
        return (d if scale is None else d * scale).unsqueeze(-1)
