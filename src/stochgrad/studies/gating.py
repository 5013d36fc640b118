"""``stochgrad train gating``: conditional computation (Bengio, Léonard & Courville 2013, arXiv 1308.3432,
its MNIST conditional-computation experiment; docs: "The paper, with corrections").

A gater path (affine → 400 tanh → affine → 2000 gates) multiplies, element by element, an expert path
(784 → 2000 linear units); then affine → softmax over 10 classes. Gaters:

============================  ================================================  ============================
gater                         training output                                   sparsity toward the target
============================  ================================================  ============================
``straight_through``          ``h ~ Bern(σ(a))``, identity backward             KL penalty on mean σ(a)
``reinforce_optimal``         ``h ~ Bern(σ(a))``, broadcast loss, Eq. 7          KL penalty on mean σ(a)
                              baseline (the unbiased gater)
``stochastic_times_smooth``   ``√σ(a)·Bern(√σ(a))`` (1308.3432 §3)               KL penalty on mean √σ(a)
``sigmoid``                   ``σ(a)`` (deterministic)                          KL penalty on mean σ(a)
``sigmoid_noise``             ``σ(a + z)``, ``z ~ N(0, 1)``                      KL penalty on mean σ(a)
``noisy_rectifier``           ``max(0, a + z)``, ``z ~ N(0, 1)`` (seed §2)        adaptive L1 on h
``rectifier``                 ``max(0, a)`` (deterministic)                     adaptive L1 on h
============================  ================================================  ============================

Sparsity as the paper does it: ``sparsity_weight · Σ_units KL(target ‖ ρ_j)`` with ``ρ_j`` the unit's
mean probability of being open over the minibatch, for the sigmoid family; for rectifiers
``λ · mean_batch Σ_units h_j`` with ``λ`` adapted every step (multiplied by ``exp(0.01·(open − target) /
target)``, starting at ``sparsity_weight · 1e-2``) until the fraction of non-zero gates sits at the target.
Seed §2's firing-rate control ([`stochgrad.FiringRateControl`][stochgrad.neurons.FiringRateControl], a per-unit offset) is available with
``rate_control=True`` but is off by default: its offset fights the gater and, measured on MNIST,
turned straight-through's gates into input-independent 10% dropout.

Protocol: SGD lr 0.1 (the unbiased gater's path 100× smaller, as in the paper), batch 32, incoming-weight
norms capped at 2, epochs over fresh permutations of the first 50,000 training images; the last 10,000
are the validation split. After every epoch the test-time threshold is chosen on the validation split
(the pre-activation quantile that leaves ``target`` of the gates open) and the validation error is
measured with deterministic gates; the best epoch's parameters are kept (early stopping, ``patience``
epochs). The test set is used once, at the end, with the validation threshold. Beside the test error the
summary reports what shows conditional computation: the fraction of gates open at test time, how
input-dependent they are ([`input_dependence`][stochgrad.studies.gating.input_dependence]), and the test error when each example is classified
through the gates of another example (input-independent gates leave it unchanged).

Sources and what is ours. The architecture, optimiser, batch, max-norm, the 100× smaller learning rate of
the unbiased gater, the optimal baseline's decay 0.9, the 10% target with a KL penalty (sigmoid gaters) or
an L1 penalty (rectifiers) and the test-time rule "deterministic gates, 10% open" are the settings of
1308.3432's MNIST experiment as recorded in the project's paper notes. The paper's own experiment section
(its penalty weights, epochs, results table) could not be read here: the stored renderings of the paper
(arxiv-vanity, ar5iv) give only its abstract and introduction, and no code of the experiment was found
(Léonard's public repositories hold later Torch work). Therefore these are our choices, measured on MNIST:
the KL weight 0.1 summed over the 2,000 gates (at 1.0 the penalty outweighs the
classification loss: straight-through's gates collapsed to input-independent dropout at 10.4% test
error; at 0.1 the gates stay input-dependent and the error falls below the linear model's), the sigmoid
gates' biases started at ``logit(target)`` (the penalty starts at its minimum instead of driving every
bias down from σ = 0.5 and shutting units for good), and the adaptive-L1 constants.

A flagged deviation: ``expert="relu"`` (``--expert relu``) rectifies the expert units, ``max(0, W x + b)``.
The paper notes say the expert units are linear, and so is the default; the flag exists to test the
hypothesis that the paper's were not (with linear experts a gater that has not learned leaves a linear
classifier, about 8% error, while the paper reports under 2% for every gater). The measured answer (no help
to either gater) is in the documentation's training results (``docs/results/training.md``).
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graph import broadcast
from ..neurons import FiringRateControl, NoisyRectifier, StochasticBinary, StochasticTimesSmooth
from ..options import DEVICE, FRACTION, NON_NEGATIVE_FLOAT, POSITIVE, OptionError, choice
from ..runinfo import write_json
from ..sampling import normal
from .training import (DataRunConfig, Metrics, NonFiniteError, clock, counter, datasets_or_fail, nothing_to_do,
                       open_run, plot_curves, restoring, save_checkpoint, stop_if_diverged, stop_training)

# the settings a resumed run must share with the run that wrote the checkpoint
IDENTITY = ("dataset", "gater", "batch_size", "lr", "seed", "target", "sparsity_weight", "rate_control", "validation",
            "expert")

GATERS = ("straight_through", "reinforce_optimal", "stochastic_times_smooth", "sigmoid", "sigmoid_noise",
          "noisy_rectifier", "rectifier")
RECTIFIERS = ("noisy_rectifier", "rectifier")
EXPERTS = ("linear", "relu")
L1_GAIN = 0.01
GATER, EXPERT = choice(*GATERS, words="one of the gaters"), choice(*EXPERTS)   # their kinds (stochgrad.options)


class SigmoidGate(nn.Module):
    """``σ(a)``, or ``σ(a + z)`` with ``z ~ N(0, σ²)`` in training: the deterministic baselines."""

    def __init__(self, noise: float = 0.0, generator=None):
        super().__init__()
        self.noise, self.generator = noise, generator

    def forward(self, a):
        if self.training and self.noise > 0:
            a = a + self.noise * normal(a.shape, a, self.generator)
        return torch.sigmoid(a)


def make_gate(kind: str, generator, target: float, rate_control: bool = False) -> nn.Module:
    """The gating non-linearity named ``kind`` (see ``stochgrad train gating --help``) aiming at ``target``
    open, wrapped in firing-rate control when ``rate_control``.
    """
    GATER.check(kind, "gater")
    neuron = {"noisy_rectifier": lambda: NoisyRectifier(1.0, generator),
              "straight_through": lambda: StochasticBinary("straight_through", generator=generator),
              "stochastic_times_smooth": lambda: StochasticTimesSmooth(generator=generator),
              "reinforce_optimal": lambda: StochasticBinary("reinforce_optimal", generator=generator),
              "rectifier": lambda: nn.ReLU(),
              "sigmoid": lambda: SigmoidGate(0.0),
              "sigmoid_noise": lambda: SigmoidGate(1.0, generator)}[kind]()
    if rate_control and kind.startswith("sigmoid"):
        raise ValueError("rate_control needs gates that output exact zeros; sigmoid gates never do")
    return FiringRateControl(neuron, target=target) if rate_control else neuron


class GatingNet(nn.Module):
    """Bengio, Léonard & Courville (2013): a gater path whose stochastic gates multiply an expert path,
    then a softmax classifier.
    """

    def __init__(self, x_dim: int, gater: str, gates: int = 2000, hidden: int = 400, classes: int = 10,
                 target: float = 0.1, generator=None, rate_control: bool = False, expert: str = "linear"):
        super().__init__()
        EXPERT.check(expert, "expert")
        self.kind, self.target, self.expert_kind = gater, target, expert
        self.gater = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh(), nn.Linear(hidden, gates))
        self.gate = make_gate(gater, generator, target, rate_control)
        self.expert = nn.Linear(x_dim, gates)
        self.out = nn.Linear(gates, classes)
        if gater not in RECTIFIERS:   # start every gate at the target open rate: the KL penalty starts at its minimum
            p_open = target ** 2 if gater == "stochastic_times_smooth" else target      # STS fires with √σ(a)
            with torch.no_grad():
                self.gater[2].bias.fill_(math.log(p_open / (1 - p_open)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Class logits ``(B, classes)``, the gates' training outputs ``(B, gates)`` and the gates'
        pre-activations ``(B, gates)`` (after the firing-rate offset, if any)."""
        raw = self.gater(x)
        g = self.gate(raw)     # a FiringRateControl shifts by its offset and updates it here
        a = self.gate.shifted(raw) if isinstance(self.gate, FiringRateControl) else raw
        return self.out(self.expert_units(x) * g), g, a

    def expert_units(self, x: Tensor) -> Tensor:
        """The expert path's outputs ``(B, gates)``: ``W x + b`` (the paper notes' linear units), or
        ``max(0, W x + b)`` with ``expert="relu"``."""
        e = self.expert(x)
        return torch.relu(e) if self.expert_kind == "relu" else e

    def pre_activation(self, x: Tensor) -> Tensor:
        a = self.gater(x)
        return self.gate.shifted(a) if isinstance(self.gate, FiringRateControl) else a

    def open_probability(self, a: Tensor) -> Tensor:
        """The probability that a gate is open (non-zero) in training, for the sigmoid family: σ(a); STS's
        binary factor fires with √σ(a) (1308.3432 §3)."""
        return torch.sigmoid(a).sqrt() if self.kind == "stochastic_times_smooth" else torch.sigmoid(a)

    def gate_value(self, a: Tensor) -> Tensor:
        """The deterministic open-gate value: 1 for binary gates; √σ, σ, max(0, ·) for the smooth ones; the
        noise-averaged output for the noisy rectifier."""
        if self.kind in ("straight_through", "reinforce_optimal"):
            return torch.ones_like(a)
        if self.kind == "stochastic_times_smooth":
            return torch.sigmoid(a).sqrt()
        if self.kind.startswith("sigmoid"):
            return torch.sigmoid(a)
        if self.kind == "noisy_rectifier":  # E[max(0, a + z)], z ~ N(0, 1): aΦ(a) + φ(a)
            normal_ = torch.distributions.Normal(torch.zeros((), dtype=a.dtype), torch.ones((), dtype=a.dtype))
            return a * normal_.cdf(a) + normal_.log_prob(a).exp()
        return torch.relu(a)

    def mean_gate(self, a: Tensor) -> Tensor:
        """The gate's expected training output (no threshold): σ(a) for the Bernoulli gates (STS: √σ·√σ),
        E[max(0, a + z)] for the noisy rectifier, σ(a / √(1 + π/8)) ≈ E[σ(a + z)] for the noisy sigmoid."""
        if self.kind in ("straight_through", "reinforce_optimal", "stochastic_times_smooth", "sigmoid"):
            return torch.sigmoid(a)
        if self.kind == "sigmoid_noise":
            return torch.sigmoid(a / (1 + torch.pi / 8) ** 0.5)
        return self.gate_value(a)

    @torch.no_grad()
    def mean_field_error(self, x: Tensor, y: Tensor) -> float:
        """Error % with every gate at its expected training output: no gate shut, for comparison only."""
        wrong = sum((self.out(self.expert_units(xc) * self.mean_gate(self.pre_activation(xc))).argmax(-1) != yc).sum().item()
                    for xc, yc in zip(x.split(1000), y.split(1000)))
        return 100.0 * wrong / len(y)

    @torch.no_grad()
    def threshold_for(self, x: Tensor, open_fraction: float) -> float:
        """The pre-activation threshold that leaves ``open_fraction`` of the gates open on ``x`` (pass training
        or validation data, never the test set)."""
        a = torch.cat([self.pre_activation(c) for c in x.split(1000)])
        k = max(1, int(round((1 - open_fraction) * a.numel())))
        return a.reshape(-1).kthvalue(k).values.item()

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor, threshold: float, donors: Tensor | None = None) -> tuple[float, Tensor]:
        """Error % with deterministic gates open where the pre-activation exceeds ``threshold``, and the
        open/shut patterns ``(N, gates)`` (bool). With ``donors`` (a permutation of ``range(N)``), example
        ``i`` is classified through the gates of example ``donors[i]``: the error that input-independent
        gates would not change."""
        a = torch.cat([self.pre_activation(xc) for xc in x.split(1000)])
        patterns = a > threshold
        gate = self.gate_value(a) * patterns.to(a.dtype)
        if donors is not None:
            gate = gate[donors]
        wrong = sum((self.out(self.expert_units(xc) * gc).argmax(-1) != yc).sum().item()
                    for xc, gc, yc in zip(x.split(1000), gate.split(1000), y.split(1000)))
        return 100.0 * wrong / len(y), patterns


def input_dependence(patterns: Tensor, labels: Tensor, pairs: int = 4000, generator=None) -> dict:
    """How much the gates depend on the input, from open/shut patterns ``(N, gates)`` of distinct examples.

    ``hamming``: the mean fraction of gates that differ between two random examples; ``hamming_independent``:
    the same for gates open at random at the same overall rate r, ``2r(1 − r)``; ``hamming_same_class`` and
    ``hamming_different_class``: over pairs of the same and of different labels; ``class_contrast``:
    ``(different − same) / hamming_independent``. Gates that ignore the input — the same gates for every
    example, or random ones (dropout) — have ``class_contrast ≈ 0``; conditional computation makes the
    gate patterns of one class closer to each other than to other classes' (> 0).
    """
    n = patterns.shape[0]
    i = torch.randint(n, (pairs,), generator=generator)
    k = (i + torch.randint(1, n, (pairs,), generator=generator)) % n           # k ≠ i
    d = (patterns[i] != patterns[k]).float().mean(-1)
    same = labels[i] == labels[k]
    r = patterns.float().mean().item()
    indep = 2 * r * (1 - r)
    d_same = d[same].mean().item() if same.any() else float("nan")
    d_diff = d[~same].mean().item() if (~same).any() else float("nan")
    return {"open_fraction": r, "hamming": d.mean().item(), "hamming_independent": indep,
            "hamming_same_class": d_same, "hamming_different_class": d_diff,
            "class_contrast": (d_diff - d_same) / indep if indep > 0 else 0.0}


def max_norm_(model: nn.Module, bound: float = 2.0) -> None:
    """Caps each unit's incoming-weight norm at ``bound`` (the paper's constraint)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):   # in place: rows longer than bound scaled down to it
                m.weight.mul_(bound / torch.linalg.vector_norm(m.weight, dim=1, keepdim=True).clamp_min(bound))


def kl_sparsity(rho: Tensor, target: float) -> Tensor:
    """``Σ_j KL(target ‖ ρ_j)`` between Bernoulli rates (1308.3432's penalty for sigmoid gaters)."""
    rho = rho.clamp(1e-6, 1 - 1e-6)
    t = target
    return (t * torch.log(t / rho) + (1 - t) * torch.log((1 - t) / (1 - rho))).sum()


@dataclass
class GatingConfig(DataRunConfig):
    """The gating study's settings (and those of every trainer: [`RunConfig`][stochgrad.studies.training.RunConfig]),
    checked when built and when training starts ([`stochgrad.options`][stochgrad.options]).

    The run ends at ``epochs`` epochs, at ``steps`` SGD steps (if given; the last epoch is then cut short and
    validated where it stops), after ``patience`` epochs without a better validation error, or after the epoch
    that passes ``max_seconds`` of training. ``epochs`` and ``steps`` left ``None`` are 100 and unlimited on a
    fresh run, and the checkpoint's own on a resumed one."""

    OPTIONS = {"device": DEVICE, "gater": GATER, "epochs": POSITIVE, "target": FRACTION,
               "sparsity_weight": NON_NEGATIVE_FLOAT, "validation": POSITIVE, "patience": POSITIVE,
               "max_seconds": NON_NEGATIVE_FLOAT, "expert": EXPERT}
    DEFAULTED = ("epochs",)
    TARGETS = ("epochs", "steps")
    TARGET_DEFAULTS = {"epochs": 100}
    out: str = "runs/gating"
    batch_size: int = 32
    lr: float = 0.1
    device: str = "cpu"
    gater: str = "straight_through"
    epochs: int | None = None
    target: float = 0.1
    sparsity_weight: float = 0.1
    rate_control: bool = False
    expert: str = "linear"      # "relu": rectified expert units, a deviation from the paper notes (see the docstring)
    validation: int = 10000
    patience: int = 20          # epochs without a better validation error before stopping
    max_seconds: float = 0.0    # stop after the epoch during which training time passes this; 0: never

    def check(self) -> None:
        """``rate_control`` only with gates that output exact zeros."""
        if self.rate_control and self.gater.startswith("sigmoid"):
            raise OptionError("rate_control", "needs gates that output exact zeros; sigmoid gates never do")


def train_gating(cfg: GatingConfig) -> dict:
    """Trains one gater; writes metrics, a summary and a plot to ``cfg.out``."""
    from tqdm import tqdm

    cfg.validate()   # before anything is read or written: the same checks as the command line's
    train, test = datasets_or_fail(cfg.dataset)
    device = torch.device(cfg.device)
    ckpt_path, state = open_run(cfg, IDENTITY)
    n_valid = cfg.validation if len(train) >= 2 * cfg.validation else len(train) // 5
    n_train = len(train) - n_valid
    xs, ys = train.images[:n_train].to(device), train.labels[:n_train].to(device)
    xv, yv = train.images[n_train:].to(device), train.labels[n_train:].to(device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    model = GatingNet(train.dim, cfg.gater, target=cfg.target, generator=gen, rate_control=cfg.rate_control,
                      expert=cfg.expert).to(device)
    score_function = cfg.gater == "reinforce_optimal"
    gater_lr = cfg.lr / 100 if score_function else cfg.lr
    opt = torch.optim.SGD([{"params": model.gater.parameters(), "lr": gater_lr},
                           {"params": [*model.expert.parameters(), *model.out.parameters()]}], lr=cfg.lr)
    l1 = torch.tensor(cfg.sparsity_weight * 1e-2)       # the adaptive L1 coefficient of rectifier gaters (1e-3 by default)
    steps_per_epoch = n_train // cfg.batch_size
    epoch, step, seconds, best, stale, history = 0, 0, 0.0, None, 0, []
    pos, perm, sums = 0, None, torch.zeros(3, device=device)   # the epoch's position, permutation and sums
    if state is not None:
        with restoring(ckpt_path):
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            l1 = state["l1"]
            epoch, step, stale, seconds = (counter(state, "epoch"), counter(state, "step"), counter(state, "stale"),
                                           clock(state))
            best, history = state["best"], list(state["history"])
            pos = counter(state, "pos") if "pos" in state else 0
            if pos:
                perm, sums = state["perm"].to(device), state["sums"].to(device)
                if perm.shape != (n_train,) or sums.shape != (3,) or pos >= steps_per_epoch:
                    raise ValueError(f"an epoch's position {pos} and permutation of {tuple(perm.shape)} do not fit "
                                     f"{n_train} training examples")
            if best is not None:   # the best epoch's parameters must fit this model too
                copy.deepcopy(model).load_state_dict(best["model"])

    def finished() -> bool:
        return (epoch >= cfg.epochs or stale >= cfg.patience or (cfg.steps is not None and step >= cfg.steps)
                or bool(pos == 0 and cfg.max_seconds and seconds >= cfg.max_seconds))

    if state is not None and finished():
        done = nothing_to_do(cfg, state, f"epoch {epoch} of {cfg.epochs}, step {step}" +
                             (f" of {cfg.steps}" if cfg.steps else ""))
        if done is not None:
            return done
    metrics = Metrics(os.path.join(cfg.out, "metrics.csv"),
                      ["step", "epoch", "train_loss", "train_error", "train_open", "valid_error", "valid_contrast",
                       "sparsity_coefficient", "seconds"], resume_step=step if state is not None else None,
                      tensorboard=cfg.tensorboard)
    rectifier = cfg.gater in RECTIFIERS
    saved = step if state is not None else None

    def save():
        nonlocal saved
        try:
            save_checkpoint({"step": step, "epoch": epoch, "pos": pos, "perm": perm if pos else None,
                             "sums": sums if pos else None, "seconds": seconds, "model": model.state_dict(),
                             "optimizer": opt.state_dict(), "generator": gen.get_state(), "l1": l1, "best": best,
                             "stale": stale, "history": history, "config": asdict(cfg)}, ckpt_path)
        except NonFiniteError as err:
            stop_training(f"after step {step} {err}", saved)
        saved = step

    total = cfg.epochs * steps_per_epoch if cfg.steps is None else min(cfg.steps, cfg.epochs * steps_per_epoch)
    bar = tqdm(total=total, initial=min(step, total), unit="step", desc=f"gating {cfg.gater}", disable=not cfg.progress)
    while not finished():
        t0 = time.perf_counter()
        if pos == 0:   # a new epoch: a fresh permutation
            perm = torch.randperm(n_train, generator=gen, device=device)
            sums = torch.zeros(3, device=device)
        model.train()
        idx = perm[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]
        x, y = xs[idx], ys[idx]
        opt.zero_grad()
        try:
            with broadcast() as graph:
                logits, g, a = model(x)
                ce = F.cross_entropy(logits, y, reduction="none")
        except ValueError:   # non-finite logits of the gates: say why, if the parameters diverged
            bar.close()
            stop_if_diverged(model, step + 1, saved)
            raise
        opened = (g != 0).to(g.dtype).mean() if not cfg.gater.startswith("sigmoid") else g.detach().mean()
        if rectifier:
            penalty = l1 * g.sum(-1).mean()
            l1 = l1 * math.exp(L1_GAIN * (opened.item() - cfg.target) / cfg.target)
        else:
            penalty = cfg.sparsity_weight * kl_sparsity(model.open_probability(a).mean(0), cfg.target)
        if score_function:
            penalty.backward(retain_graph=True)
            graph.backward(ce)
        else:
            (ce.mean() + penalty).backward()
        opt.step()
        max_norm_(model)
        step, pos = step + 1, pos + 1
        sums += torch.stack([ce.detach().mean(), (logits.detach().argmax(-1) != y).float().mean(), opened.detach()])
        seconds += time.perf_counter() - t0
        bar.update()
        if pos < steps_per_epoch and not (cfg.steps is not None and step >= cfg.steps):
            continue
        # the end of an epoch (or of the run, cut short by --steps): validation, metrics, early stopping, checkpoint
        t0 = time.perf_counter()
        train_loss, train_err, train_open = (sums / pos).tolist()
        if not math.isfinite(train_loss):
            bar.close()
            stop_if_diverged(model, step, saved)
            stop_training(f"the loss became {train_loss} by step {step}", saved)
        model.eval()
        threshold = model.threshold_for(xv, cfg.target)
        valid_err, patterns = model.evaluate(xv, yv, threshold)
        dep = input_dependence(patterns, yv.cpu(), generator=torch.Generator().manual_seed(epoch))
        seconds += time.perf_counter() - t0
        whole = pos == steps_per_epoch
        at = epoch + 1 if whole else epoch + pos / steps_per_epoch
        history.append({"epoch": at, "valid_error_percent": valid_err, "train_error_percent": 100 * train_err})
        metrics.write(step=step, epoch=at, train_loss=train_loss, train_error=100 * train_err, train_open=train_open,
                      valid_error=valid_err, valid_contrast=dep["class_contrast"], sparsity_coefficient=float(l1),
                      seconds=seconds)
        if best is None or valid_err < best["valid_error_percent"]:
            best, stale = {"epoch": at, "valid_error_percent": valid_err, "threshold": threshold,
                           "model": copy.deepcopy(model.state_dict())}, 0
        else:
            stale += 1
        if whole:
            epoch, pos = epoch + 1, 0
        save()
        bar.set_postfix(epoch=f"{at:.3g}", valid=f"{valid_err:.2f}%", open=f"{train_open:.3f}")
    bar.close()
    with tqdm(total=7, desc=f"gating {cfg.gater}: final evaluation", disable=not cfg.progress) as final:
        with restoring(ckpt_path):
            model.load_state_dict(best["model"])
        model.eval()
        threshold = model.threshold_for(xv, cfg.target)          # chosen on validation data, never on the test set
        final.update()
        x_test, y_test = test.images.to(device), test.labels.to(device)
        test_err, patterns = model.evaluate(x_test, y_test, threshold)
        final.update()
        train_err_final, _ = model.evaluate(xs[:10000], ys[:10000], threshold)
        final.update()
        dep = input_dependence(patterns, y_test.cpu(), generator=torch.Generator().manual_seed(cfg.seed))
        donors = torch.randperm(len(y_test), generator=torch.Generator().manual_seed(cfg.seed)).to(device)
        shuffled_err, _ = model.evaluate(x_test, y_test, threshold, donors)
        final.update()
        with torch.no_grad():
            spread = torch.cat([model.open_probability(model.pre_activation(c))
                                for c in xv.split(1000)]).std(0).mean().item()
        final.update()
        mean_field = model.mean_field_error(x_test, y_test)
        final.update()
        summary = {"gater": cfg.gater, "dataset": cfg.dataset, "epochs": epoch + (pos > 0) * pos / steps_per_epoch,
                   "best_epoch": best["epoch"], "steps": step, "target": cfg.target,
                   "sparsity": "adaptive L1" if rectifier else "KL",
                   "sparsity_weight": cfg.sparsity_weight, "rate_control": cfg.rate_control, "expert": cfg.expert,
                   "test_error_percent": test_err, "valid_error_percent": best["valid_error_percent"],
                   "train_error_percent_first_10k": train_err_final, "threshold": threshold,
                   "threshold_chosen_on": "validation", "test_open_fraction": dep["open_fraction"],
                   "test_hamming": dep["hamming"], "test_hamming_independent": dep["hamming_independent"],
                   "test_hamming_same_class": dep["hamming_same_class"],
                   "test_hamming_different_class": dep["hamming_different_class"],
                   "test_class_contrast": dep["class_contrast"],
                   "test_error_percent_gates_of_another_example": shuffled_err,
                   "validation_open_probability_spread": spread,
                   "mean_field_test_error_percent": mean_field, "train_seconds": seconds}
        write_json(os.path.join(cfg.out, "summary.json"), summary)
        plot_curves(os.path.join(cfg.out, "curves.png"), metrics.read(), "epoch",
                    ["train_error", "valid_error", "train_open", "valid_contrast"], f"gating {cfg.gater} on {cfg.dataset}")
        final.update()
    return summary
