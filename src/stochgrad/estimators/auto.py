"""``auto``: one site's estimator, chosen among candidates by their measured efficiency on the user's own f.

Which estimator is best depends on ``f`` and on where the logits are, and both move in training. ``Auto``
holds the candidate estimators (by default every registered unbiased one that fits the site's budget)
and, on *measuring calls*, runs them all on the same ``f`` and logits (each with its own noise). For
each candidate ``c`` it tracks, as moving averages over measuring calls (``decay``), the second moment
``M_c = mean_examples ‖ĝ_c‖²`` and ``‖∇‖²`` (below), so its variance is ``V_c = M_c − ‖∇‖²``. It uses the candidate with the
least **variance × f-evaluations per example** (``V_c·e_c``: the variance after spending a fixed number
of evaluations; wall time is not used, so the choice repeats exactly and agrees across machines).

- Unbiased at every step: a call's gradient is the estimate of the candidate chosen *before* the call
  (from past calls only); on a measuring call too, the others' estimates only feed the statistics.
- Measured precisely: on a measuring call every candidate runs on *common random numbers* (one
  generator seeded by a draw from the caller's, so candidates drawing alike see the same samples and
  their differences carry little noise), and ``‖∇‖²`` is estimated by the returned estimate times the
  chosen candidate's rerun on the common numbers (independent, so unbiased).
- Budget: ``samples`` of the first call fixes the f-evaluations per example an ordinary call may
  spend; each candidate runs with the most samples that fit (``disarm``: 1 pair for a budget of 2).
- Cost of measuring, bounded: calls ``0 … warmup−1`` and every ``every``-th call after measure; a
  measuring call evaluates ``f`` ``Σ_c e_c`` times more than the chosen's ``e_chosen``, so beyond the
  warm-up the extra evaluations are ``Σ_c e_c / (every · e_chosen)`` of the run (16 % for the 8
  candidates of budget 2 and ``every = 50``; with ``every = 200``, 4 %). :attr:`measuring_fraction` reports the real figure.
- State in buffers (statistics, choice, counters; the candidates' own state in their modules):
  ``state_dict`` resumes exactly; statistics are averaged over ranks under ``torch.distributed`` before
  the choice is taken, so all ranks switch together (each rank must make the same calls).
- The network view (``StochasticBinary("auto")``): one sample per example, so the candidates are the
  score-function estimators with a budget of 1 (``reinforce``, ``reinforce_ma``, ``reinforce_optimal``),
  compared on the same broadcast ``(h, L)``: equal costs, so by their second moment (= variance + the
  same ``‖∇‖²`` for every unbiased candidate).

:meth:`report` says what was chosen and why; ``extra_repr`` prints it.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..distributed import mean_over_ranks
from ..sampling import Sharded
from .base import REGISTRY, Estimator

# Left out of the default candidates: enumeration, auto itself, and ARM, which DisARM dominates at the same
# cost (DisARM is ARM Rao-Blackwellised over u given the pair; Dong et al. 2020).
_NEVER = ("exact", "auto", "arm")


def _common_numbers(generator, like: Tensor):
    """A factory of generators that all repeat one stream, seeded by one draw from ``generator`` (or the global
    generator): every candidate sees the same noise, and the caller's stream moves on independently of it."""
    base = generator.generator if isinstance(generator, Sharded) else generator
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=base, device=base.device if base is not None else "cpu"))

    def fresh():
        g = torch.Generator(device=like.device).manual_seed(seed)
        return Sharded(g, generator.rank, generator.world) if isinstance(generator, Sharded) else g

    return fresh


def plan(budget: int, n: int, names=None) -> list[tuple[Estimator, int]]:
    """Fresh candidates for a budget of ``budget`` f-evaluations per example: ``(estimator, samples)`` each.

    ``names``: registered unbiased estimators (default: all but those in ``_NEVER``); those that cannot
    fit the budget are left out. Each gets the most samples whose cost fits.
    """

    if names is None:
        names = [k for k, cls in REGISTRY.items() if cls.unbiased and k not in _NEVER]
    out = []
    for name in names:
        if name not in REGISTRY or name == "auto":
            raise ValueError(f"auto: unknown or unusable candidate {name!r}; known: {', '.join(REGISTRY)}")
        if not REGISTRY[name].unbiased:
            raise ValueError(f"auto: candidate {name!r} is biased; auto chooses among unbiased estimators")
        est = REGISTRY[name]()
        fits = [s for s in range(budget, est.min_samples - 1, -1) if est.evaluations(n, s) <= budget]
        if fits:
            out.append((est, fits[0]))
    if not out:
        raise ValueError(f"auto: no candidate among {list(names)} fits samples={budget} (its budget of "
                         "f-evaluations per example)")
    return out


class Auto(Estimator):
    """``auto``: per site, the unbiased candidate with the least measured variance × f-evaluations on the
    user's own ``f``, re-measured every ``every`` calls (module docstring). Unbiased at every step;
    :meth:`report` says what was chosen and why.

    Args:
        candidates: estimator names (default: every registered unbiased one that fits the budget).
        every: calls between measuring calls.
        warmup: the first calls, all measuring.
        decay: of the moving statistics.
    """

    name = "auto"
    description = ("chooses per site the unbiased estimator with least measured variance × f-evaluations on "
                   "the user's f; re-measured every `every` calls")
    unbiased = True
    broadcast = True
    cost = "S+meas."

    def __init__(self, candidates: list[str] | tuple[str, ...] | None = None, every: int = 50, warmup: int = 10,
                 decay: float = 0.5):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if candidates is not None and (isinstance(candidates, str) or len(candidates) < 1):
            raise ValueError(f"candidates must be a list of registered names, got {candidates!r}")
        self.names = None if candidates is None else tuple(candidates)
        self.every, self.warmup, self.decay = every, warmup, decay
        self.candidates = nn.ModuleList()
        self.sizes: list[int] = []          # samples per call of each candidate
        self.costs: list[int] = []          # f-evaluations per example of each candidate
        for name, value in (("budget", 0), ("units", 0), ("calls", 0), ("choice", 0)):
            self.register_buffer(name, torch.tensor(value, dtype=torch.int64))
        self.register_buffer("second_moment", torch.zeros(0))   # (C,) moving mean of mean ‖ĝ_c‖²
        self.register_buffer("squared_norm", torch.zeros(()))   # moving mean of the estimate of ‖∇‖²
        self.register_buffer("weight", torch.zeros(()))         # 1 − decay^measurements: bias correction
        self.register_buffer("spent", torch.zeros(2, dtype=torch.float64))  # f-evals per example: all, measuring extra
        self._calls = self._choice = 0
        self._spent = [0.0, 0.0]
        self.history: list[tuple[int, str]] = []   # (call, candidate) at every switch

    # ---- building -------------------------------------------------------------------------------
    def _build(self, budget: int, n: int, like: Tensor | None = None) -> None:
        chosen = plan(budget, n, self.names)
        self.candidates = nn.ModuleList(est for est, _ in chosen)
        self.sizes = [s for _, s in chosen]
        self.costs = [c.evaluations(n, s) for c, s in zip(self.candidates, self.sizes)]
        self.budget.fill_(budget)
        self.units.fill_(n)
        dtype = torch.float64 if like is None else like.dtype
        device = self.budget.device if like is None else like.device
        self.second_moment = torch.zeros(len(chosen), dtype=dtype, device=device)
        self.squared_norm = self.squared_norm.to(dtype=dtype, device=device)
        self.weight = self.weight.to(dtype=dtype, device=device)
        if like is not None:
            self.candidates.to(device)
        self.history = [(0, self._label(0))]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        budget, units = state_dict.get(prefix + "budget"), state_dict.get(prefix + "units")
        if budget is not None and int(budget) > 0 and not self.sizes:
            self._build(int(budget), int(units), state_dict[prefix + "second_moment"])
        for name in ("second_moment", "squared_norm", "weight"):
            incoming = state_dict.get(prefix + name)
            if incoming is not None and (incoming.shape, incoming.dtype) != (self._buffers[name].shape,
                                                                             self._buffers[name].dtype):
                self._buffers[name] = torch.zeros_like(incoming, device=self._buffers[name].device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._calls, self._choice = int(self.calls), int(self.choice)
        self._spent = self.spent.tolist()

    def get_extra_state(self):
        return {"history": list(self.history)}

    def set_extra_state(self, state):
        self.history = list(state.get("history", [])) if state else []

    def _ready(self, samples: int, n: int, like: Tensor) -> None:
        if not self.sizes:
            self._build(samples, n, like)
        elif samples != int(self.budget) or n != int(self.units):
            raise ValueError(f"auto was set up for samples={int(self.budget)} (its budget of f-evaluations per example) "
                             f"and {int(self.units)} units, got samples={samples} and {n} units: keep one auto "
                             "object per stochastic site and one budget")

    def _measuring(self, t: int) -> bool:
        return t < self.warmup or t % self.every == 0

    def _label(self, i: int) -> str:
        return f"{self.candidates[i].name}(samples={self.sizes[i]})"

    def evaluations(self, n, samples=1):
        """f-evaluations per example of an ordinary call: the chosen candidate's. A measuring call adds those of
        every candidate; :attr:`spent` counts both, :attr:`measuring_fraction` says what share measuring took."""
        if not self.sizes:
            est, s = plan(samples, n, self.names)[0]
            return est.evaluations(n, s)
        return self.costs[self._choice]

    # ---- the functional view ----------------------------------------------------------------------
    def estimate(self, f, logits, samples, generator):
        self._ready(samples, logits.shape[-1], logits)
        k = self._choice
        chosen = self.candidates[k]
        if not (logits.requires_grad and self.training):
            return chosen.estimate(f, logits, self.sizes[k], generator)
        t = self._calls
        self._count(t)
        value = chosen.estimate(f, logits, self.sizes[k], generator)   # the step's gradient: choice from the past
        if not self._measuring(t):
            return value
        # Measuring: every candidate on common random numbers (a generator seeded from the caller's), so that
        # their differences are measured precisely; ‖∇‖² from the returned estimate × the chosen one's rerun.
        (returned,) = torch.autograd.grad(value.sum(), logits, retain_graph=True)
        grads = []
        common = _common_numbers(generator, logits)
        for cand, s in zip(self.candidates, self.sizes):
            a = logits.detach().requires_grad_(True)
            with torch.enable_grad():
                v = cand.estimate(f, a, s, common())
                (g,) = torch.autograd.grad(v.sum(), a, allow_unused=True)
            grads.append(torch.zeros_like(a) if g is None else g.detach())
        G = torch.stack(grads).reshape(len(grads), -1, logits.shape[-1])     # (C, examples, n)
        norm = (returned.detach().reshape(-1, logits.shape[-1]) * G[k]).sum(-1)   # independent: E = ‖∇‖²
        self._measure(G.square().sum(-1).mean(-1), norm.mean(), G.shape[1], t)
        return value

    # ---- the network view -------------------------------------------------------------------------
    def score_gradient(self, h, probs, losses, update=True, dl_dh=None):
        self._ready(h.shape[0] if h.dim() > probs.dim() else 1, h.shape[-1], probs)   # one sample: no lead dim
        bad = [c.name for c in self.candidates if not c.broadcast]
        if bad:
            raise ValueError(f"auto as a layer needs candidates that take the broadcast loss; {bad} do not")
        k = self._choice
        if not update:
            return self.candidates[k].score_gradient(h, probs, losses, update, dl_dh)
        t = self._calls
        self._count(t)
        if not self._measuring(t):
            return self.candidates[k].score_gradient(h, probs, losses, update, dl_dh)
        grads = [c.score_gradient(h, probs, losses, True, dl_dh) for c in self.candidates]
        G = torch.stack(grads).reshape(len(grads), -1, h.shape[-1])
        # one shared sample: no independent pair to estimate ‖∇‖², and equal costs: compare second moments
        self._measure(G.square().sum(-1).mean(-1), torch.zeros((), dtype=G.dtype, device=G.device), G.shape[1], t)
        return grads[k]

    # ---- statistics and the choice ----------------------------------------------------------------
    def _count(self, t: int) -> None:
        self._calls = t + 1
        self.calls.fill_(self._calls)
        k = self._choice
        extra = sum(self.costs) if self._measuring(t) else 0
        self._spent[0] += self.costs[k] + extra
        self._spent[1] += extra
        self.spent[0].fill_(self._spent[0])
        self.spent[1].fill_(self._spent[1])

    @torch.no_grad()
    def _measure(self, second: Tensor, cross: Tensor, examples: int, t: int) -> None:
        stats = mean_over_ranks(torch.cat([second, cross.reshape(1)]).to(self.second_moment.dtype), examples)
        if not bool(torch.isfinite(stats).all()):   # nothing non-finite enters the statistics
            return
        d = self.decay
        self.second_moment.mul_(d).add_((1 - d) * stats[:-1])
        self.squared_norm.mul_(d).add_((1 - d) * stats[-1])
        self.weight.mul_(d).add_(1 - d)
        best = int(torch.argmin(self.efficiency()))
        if best != self._choice:
            self.history.append((t + 1, self._label(best)))
        self._choice = best
        self.choice.fill_(best)

    def variance(self) -> Tensor:
        """``(C,)``: each candidate's measured variance of one estimate (summed over units, mean over examples)."""
        w = self.weight.clamp_min(1e-30)
        return ((self.second_moment - self.squared_norm) / w).clamp_min(0)

    def efficiency(self) -> Tensor:
        """``(C,)``: variance × f-evaluations per example; the least is chosen."""
        return self.variance() * torch.tensor(self.costs, dtype=self.second_moment.dtype,
                                              device=self.second_moment.device)

    @property
    def chosen(self) -> str:
        """The candidate in use, e.g. ``"disarm(samples=1)"`` (``""`` before the first call)."""
        return self._label(self._choice) if self.sizes else ""

    @property
    def measuring_fraction(self) -> float:
        """Share of this site's f-evaluations spent on measuring (beyond what the chosen estimator needed)."""
        total, extra = self._spent
        return extra / total if total > 0 else 0.0

    def report(self) -> dict:
        """What auto chose and why: per candidate its samples, f-evaluations, variance and variance × evaluations."""
        if not self.sizes:
            return {"chosen": "", "calls": 0, "candidates": {}}
        var, eff = self.variance().tolist(), self.efficiency().tolist()
        cands = {self._label(i): {"evaluations": self.costs[i], "variance": var[i], "variance_x_evaluations": eff[i]}
                 for i in range(len(self.sizes))}
        return {"chosen": self.chosen, "calls": self._calls, "budget": int(self.budget),
                "measuring_fraction": self.measuring_fraction, "measured": self.weight.item() > 0,
                "criterion": "least variance x f-evaluations per example", "candidates": cands,
                "history": list(self.history)}

    def extra_repr(self) -> str:
        head = f"every={self.every}, warmup={self.warmup}, decay={self.decay}"
        if not self.sizes:
            return head + ", not yet used"
        ranked = sorted(range(len(self.sizes)), key=lambda i: self.efficiency()[i].item())
        table = ", ".join(f"{self._label(i)}: {self.efficiency()[i].item():.3g}" for i in ranked)
        return (f"{head}, budget={int(self.budget)}, calls={self._calls}, chosen={self.chosen}, measuring "
                f"fraction={self.measuring_fraction:.3f}; variance x evaluations: {table}")
