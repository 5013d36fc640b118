"""``stochgrad train vae``: the VAE benchmark, one model whose latent is a distribution.

The latent layer is any [`Distribution`][stochgrad.distributions.Distribution]: ``latent`` Bernoulli units (the
binary VAE of the DisARM and RODEO papers) or ``latent`` categorical variables of ``categories`` classes
(``--categories K``: the Gumbel-softmax and ReinMax papers' categorical VAE). The encoder emits the
logits of ``q(h | x)`` in the distribution's event shape (``(latent,)`` or ``(latent, K)``), the decoder
reads the sample flattened, the prior is learned logits of the same shape (or fixed at zero: uniform),
and every log-probability and KL is the distribution's own (``log_prob``, ``kl``).

**Learning signal.** With ``signal="elbo"`` the estimator sees, per example, the whole one-sample ELBO
term ``f(h) = −[log p(x | h) + log p(h) − log q(h | x)]`` with q's logits *detached inside f* (the direct
term ``E_q[∇ log q] = 0`` is dropped), as the DisARM code does (google-research
``disarm/binary/networks.py``: ``get_elbo`` inside ``get_layer_grad_estimation``) and RODEO's
(thjashin/rodeo ``networks.py``: ``get_loss``). ``signal="analytic_kl"`` feeds the estimator only
``−log p(x | h)`` and adds ``KL(q ‖ p)`` exactly, as the ReinMax code does; on the binary MNIST VAE it is the
worse signal (the estimator's centring no longer covers the KL's ``log q − log p`` noise: about twice the
encoder-gradient variance and ~1 nat lower ELBO at equal steps).

**Protocols** (``--protocol``; explicit flags override), each the published code's settings:

* ``disarm`` — google-research ``disarm/binary/experiment_launcher_singlelayer.py`` and its README
  command: linear model, 200 Bernoulli latents, batch 50; Adam (Keras: eps 1e-7) at 1e-4 for encoder and
  decoder; prior logits by SGD at 1e-2; 1,000,000 steps; dynamic MNIST on the first 50,000 training images
  (the last 10,000 are the validation split); ``--demean_input`` (encoder sees ``x − pixel mean``, decoder
  sees ``2b − 1``) and ``--initialize_with_bias`` (decoder output bias at the logit of the pixel means); one
  antithetic pair (``reinforce_loo``: two samples).
* ``rodeo`` — thjashin/rodeo ``experiment_launcher_singlelayer.py``: nonlinear model (hidden 200, 200,
  LeakyReLU 0.3), batch 100, Adam at 1e-3 for encoder and decoder, prior fixed (``prior_lr = 0``), K = 2
  evaluations of f per example (two samples, or one antithetic pair), raw inputs, zero decoder bias,
  1,000,000 steps.
* ``reinmax`` — microsoft/ReinMax's MNIST experiment (LiyuanLucasLiu/ReinMax ``mnist_vae``:
  ``gumbel_softmax_vae.py``, ``model/vae.py``, ``reinmax_<C>_<L>.sh``): categorical latents, by default
  ``L = 30`` variables of ``C = 10`` classes; encoder 784-512-256-(L·C) and decoder (L·C)-256-512-784 with
  ReLU and PyTorch's default initialisation; the MNIST intensities in [0, 1] as Bernoulli targets (not
  binarised: ``transforms.ToTensor()``), all 60,000 training images shuffled every epoch, batch 100, 160
  epochs (96,000 steps); the prior fixed uniform and ``KL(q ‖ uniform)`` exact (``signal="analytic_kl"``);
  the optimiser, learning rate and temperature of the configuration's script ([`REINMAX_SCRIPTS`][stochgrad.studies.vae.REINMAX_SCRIPTS]:
  10 × 30 is RAdam, 5e-4, τ = 1.3; 8 × 16 is RAdam, 7e-4, τ = 1.5). The temperature goes to every
  estimator that takes one (``reinmax``, ``gumbel_st``, ``gumbel_rao``); ``straight_through`` back-propagates
  through ``softmax(a)`` (τ = 1). Reported as the code prints it: the training −ELBO averaged over the last
  epoch, and the one-sample test −ELBO with the exact KL (``test_elbo_1_sample_analytic_kl``, here as an
  ELBO: its negative).

``disarm`` and ``rodeo``: Keras ``Dense`` initialisation (Xavier-uniform weights, zero biases). Every
protocol draws its batches from a fresh random permutation of the training split every epoch. Reported
besides: the 100-sample importance-weighted test bound ``log mean_k p(x, h_k) / q(h_k | x)`` and the
one-sample test ELBO.

``clock="cpu"`` measures training time (``--max-seconds``, the ``seconds`` column) as the training
thread's CPU time instead of the wall clock: on a shared machine, a budget of seconds that other
processes cannot eat into.
"""
from __future__ import annotations

import inspect
import math
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import data as D
from ..distributions import BERNOULLI, CATEGORICAL, Distribution, get_distribution
from ..estimators import REGISTRY, get_estimator, resolve
from ..options import DEVICE, NON_NEGATIVE, NON_NEGATIVE_FLOAT, POSITIVE, POSITIVE_FLOAT, OptionError, choice
from ..runinfo import write_json
from ..sampling import Sharded
from .training import (CheckpointError, DataRunConfig, Metrics, NonFiniteError, all_mean, clock as clock_of, counter,
                       datasets_or_fail, distributed_from_env, fail, nothing_to_do, open_run, plot_curves, restoring,
                       save_checkpoint, stop_if_diverged, stop_training)

SIGNALS = ("elbo", "analytic_kl")
CLOCKS = ("wall", "cpu")

#: Hidden widths (encoder order; the decoder mirrors them) and activation of each model.
MODELS = {"linear": ((), nn.LeakyReLU), "nonlinear": ((200, 200), lambda: nn.LeakyReLU(0.3)),
          "relu_512_256": ((512, 256), nn.ReLU)}

#: ReinMax's per-configuration settings, ``(classes C, latents L) → (optimiser, lr, temperature)``, from
#: LiyuanLucasLiu/ReinMax ``mnist_vae/reinmax_<C>_<L>.sh`` (the 32 × 64 script's other architecture aside).
REINMAX_SCRIPTS = {(8, 4): ("adam", 5e-4, 1.3), (4, 24): ("radam", 5e-4, 1.5), (8, 16): ("radam", 7e-4, 1.5),
                   (16, 12): ("radam", 7e-4, 1.5), (64, 8): ("radam", 5e-4, 1.5), (10, 30): ("radam", 5e-4, 1.3)}

#: The published set-ups (see the module docstring for the sources).
PROTOCOLS = {
    "disarm": dict(model="linear", batch_size=50, lr=1e-4, prior_lr=1e-2, adam_eps=1e-7, demean=True,
                   signed_latents=True, bias_init=True, validation=10000, steps=1_000_000, optimizer="adam",
                   init="keras", binarize=True, signal="elbo", categories=0),
    "rodeo": dict(model="nonlinear", batch_size=100, lr=1e-3, prior_lr=0.0, adam_eps=1e-7, demean=False,
                  signed_latents=False, bias_init=False, validation=10000, steps=1_000_000, optimizer="adam",
                  init="keras", binarize=True, signal="elbo", categories=0),
    "reinmax": dict(model="relu_512_256", batch_size=100, lr=None, prior_lr=0.0, adam_eps=1e-8, demean=False,
                    signed_latents=False, bias_init=False, validation=0, steps=160 * 600, optimizer=None,
                    init="torch", binarize=False, signal="analytic_kl", categories=10, latent=30),
}


def _mlp(sizes, activation):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Encoder ``x → logits of q(h | x)``, decoder ``h → logits of p(x | h)``, prior logits; the latent ``h``
    follows ``distribution`` (module docstring).

    Args:
        x_dim: pixels ``D``.
        latent: latent units (Bernoulli) or variables (categorical).
        model: a key of [`MODELS`][stochgrad.studies.vae.MODELS] (``linear``, ``nonlinear``, ``relu_512_256``).
        hidden: the ``nonlinear`` model's width.
        pixel_mean: the data's pixel means (``demean``, ``bias_init``); 0.5 when not given.
        demean: the encoder sees ``x − pixel_mean`` (DisARM's ``--demean_input``).
        signed_latents: the decoder sees ``2h − 1`` instead of ``h`` (the same flag's effect on the decoder).
        bias_init: the decoder's output bias starts at ``logit(pixel_mean)`` (``--initialize_with_bias``).
        distribution: ``"bernoulli"``, ``"categorical"`` or a [`Distribution`][stochgrad.distributions.Distribution].
        categories: classes ``K >= 2`` per categorical variable.
        init: ``"keras"`` (Xavier-uniform weights, zero biases, as the DisARM and RODEO code) or ``"torch"``
            (``nn.Linear``'s own, as the ReinMax code).
    """

    def __init__(self, x_dim: int, latent: int = 200, model: str = "linear", hidden: int = 200,
                 pixel_mean: Tensor | None = None, demean: bool = True, signed_latents: bool = False,
                 bias_init: bool = True, distribution: str | Distribution = "bernoulli", categories: int = 10,
                 init: str = "keras"):
        super().__init__()
        if model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
        if init not in ("keras", "torch"):
            raise ValueError(f"init must be 'keras' or 'torch', got {init!r}")
        self.dist = get_distribution(distribution)
        if latent < 1 or (self.dist is CATEGORICAL and categories < 2):
            raise ValueError(f"a VAE needs latent >= 1 and, for categorical latents, categories >= 2; got latent = "
                             f"{latent}, categories = {categories}")
        self.event = (latent,) if self.dist.event_dims == 1 else (latent, categories)
        widths, activation = MODELS[model]
        widths = (hidden, hidden) if model == "nonlinear" else widths
        units = math.prod(self.event)
        self.encoder = _mlp([x_dim, *widths, units], activation)
        self.decoder = _mlp([units, *widths[::-1], x_dim], activation)
        self.prior_logits = nn.Parameter(torch.zeros(self.event))
        self.demean, self.signed_latents = demean, signed_latents
        mean = torch.full((x_dim,), 0.5) if pixel_mean is None else pixel_mean.clamp(1e-3, 1 - 1e-3)
        with torch.no_grad():
            if init == "keras":
                for m in self.modules():
                    if isinstance(m, nn.Linear):
                        nn.init.xavier_uniform_(m.weight)
                        nn.init.zeros_(m.bias)
            if bias_init:  # decoder output starts at the data's pixel means
                self.decoder[-1].bias.copy_(torch.logit(mean))
        self.register_buffer("pixel_mean", mean)

    def encode(self, x: Tensor) -> Tensor:
        """Logits of ``q(h | x)``: ``x`` ``(B, D)`` → ``(B, *event)``."""
        out = self.encoder(x - self.pixel_mean if self.demean else x)
        return out if len(self.event) == 1 else out.unflatten(-1, self.event)

    def neg_log_lik(self, h: Tensor, x: Tensor) -> Tensor:
        """``−log p(x | h)``: ``h`` ``(*lead, B, *event)``, ``x`` ``(B, D)`` (values in [0, 1]) → ``(*lead, B)``."""
        logits = self.decoder(self.dist.flat(2 * h - 1 if self.signed_latents else h))
        return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    def learning_signal(self, h: Tensor, x: Tensor, q_logits: Tensor) -> Tensor:
        """The per-sample negative ELBO term ``−log p(x | h) − log p(h) + log q(h | x)``, ``(*lead, B)``
        (DisARM code, ``get_elbo``). Pass ``q_logits`` detached to get the estimator's ``f``."""
        return self.neg_log_lik(h, x) - self.dist.log_prob(h, self.prior_logits) + self.dist.log_prob(h, q_logits)

    def loss(self, x: Tensor, estimator, samples: int = 1, generator=None, signal: str = "elbo") -> Tensor:
        """Per-example ``−ELBO`` estimate ``(B,)``, whose backward carries the estimator's gradient to the
        encoder and the pathwise gradient to the decoder and prior. ``signal``: see the module docstring."""
        q_logits = self.encode(x)
        est = resolve(estimator).forward   # (the module's own forward: no hooks to run)
        if signal == "elbo":
            q_fixed = q_logits.detach()
            return est(lambda h: self.learning_signal(h, x, q_fixed), q_logits, samples, generator, self.dist)
        if signal == "analytic_kl":
            recon = est(lambda h: self.neg_log_lik(h, x), q_logits, samples, generator, self.dist)
            return recon + self.dist.kl(q_logits, self.prior_logits)
        raise ValueError(f"signal must be one of {', '.join(SIGNALS)}, got {signal!r}")

    forward = loss  # so that DistributedDataParallel sees the forward pass

    @torch.no_grad()
    def iw_bound(self, x: Tensor, k: int = 100, generator=None) -> Tensor:
        """The ``k``-sample importance-weighted lower bound on ``log p(x)``, per example ``(B,)``."""
        q_logits = self.encode(x)
        h = self.dist.sample(self.dist.probs(q_logits), (k,), generator)
        return torch.logsumexp(-self.learning_signal(h, x, q_logits), 0) - math.log(k)

    @torch.no_grad()
    def elbo_analytic_kl(self, x: Tensor, generator=None) -> Tensor:
        """The one-sample ELBO with the exact KL, ``log p(x | h) − KL(q ‖ p)``, per example ``(B,)`` (what the
        ReinMax code prints as the test loss, negated)."""
        q_logits = self.encode(x)
        h = self.dist.sample(self.dist.probs(q_logits), (), generator)
        return -self.neg_log_lik(h, x) - self.dist.kl(q_logits, self.prior_logits)

    def extra_repr(self) -> str:
        return f"distribution={self.dist.name}, event={self.event}"


BernoulliVAE = VAE  # the name the binary VAE had (its default distribution)


def takes_temperature(estimator: str) -> bool:
    """Whether the registered estimator ``estimator`` has a ``temperature`` option."""
    cls = REGISTRY.get(estimator)
    return cls is not None and "temperature" in inspect.signature(cls.__init__).parameters


@dataclass
class VAEConfig(DataRunConfig):
    """``None`` fields take the protocol's value ([`PROTOCOLS`][stochgrad.studies.vae.PROTOCOLS]); ``steps``, on a resumed run, the
    checkpoint's own target. The settings every trainer shares: [`RunConfig`][stochgrad.studies.training.RunConfig].
    Checked when built and when training starts ([`stochgrad.options`][stochgrad.options]: ``OPTIONS``; ``samples`` at least the
    estimator's minimum)."""

    OPTIONS = {"protocol": choice(*PROTOCOLS), "model": choice(*MODELS),
               "estimator": choice(*(n for n in REGISTRY if n != "exact"), words="a registered estimator but exact"),
               "signal": choice(*SIGNALS), "clock": choice(*CLOCKS), "prior_lr": NON_NEGATIVE_FLOAT, "device": DEVICE,
               "samples": POSITIVE, "latent": POSITIVE, "categories": NON_NEGATIVE, "variance_every": POSITIVE,
               "eval_at": POSITIVE, "max_seconds": NON_NEGATIVE_FLOAT, "test_samples": POSITIVE,
               "test_examples": NON_NEGATIVE, "temperature": POSITIVE_FLOAT}
    DEFAULTED = ("model", "batch_size", "lr", "prior_lr", "signal", "samples", "latent", "categories", "temperature")
    TARGET_DEFAULTS = {}   # steps: the protocol's (resolved), or the checkpoint's on a resumed run
    out: str = "runs/vae"
    batch_size: int | None = None
    lr: float | None = None
    protocol: str = "disarm"
    model: str | None = None
    estimator: str = "disarm"
    prior_lr: float | None = None
    signal: str | None = None    # None: the protocol's (elbo; reinmax: analytic_kl)
    device: str = "cpu"
    samples: int | None = None   # None: the estimator's minimum (one antithetic pair, two for reinforce_loo)
    latent: int | None = None    # None: the protocol's (200 Bernoulli units, 20 categorical variables; reinmax: 30)
    categories: int | None = None  # 0: Bernoulli latents; K >= 2: `latent` categorical variables of K classes
    temperature: float | None = None   # the estimator's; None: the protocol's (reinmax) or the estimator's default
    clock: str = "wall"          # what --max-seconds and the seconds column measure: wall or the thread's cpu time
    variance_every: int = 10     # steps between updates of the encoder-gradient-variance diagnostic
    eval_at: tuple = ()          # extra steps at which the test bounds are evaluated (summary["evaluations"])
    max_seconds: float = 0.0     # stop (checkpoint, evaluate) once this much training time has passed; 0: never
    test_samples: int = 100
    test_examples: int = 0   # 0: the whole test set
    train_bound: bool = True  # the summary also has the bound on as many training images

    def check(self) -> None:
        """``samples`` at least the estimator's minimum (``reinforce_loo``: 2); ``categories`` 0 or >= 2, with an
        estimator that supports categorical units; ``temperature`` only for an estimator that has one; the reinmax
        protocol at a published configuration. (The names: their kinds, ``OPTIONS``.)"""
        usable = [n for n in REGISTRY if n != "exact"]
        est = REGISTRY.get(self.estimator)
        if self.samples is not None and est is not None and self.samples < est.min_samples:
            raise OptionError("samples", f"must be >= {est.min_samples} for estimator {self.estimator}, got {self.samples}")
        categories = PROTOCOLS[self.protocol]["categories"] if self.categories is None else self.categories
        if categories == 1:
            raise OptionError("categories", "must be 0 (Bernoulli latents) or >= 2 classes, got 1")
        if categories and "categorical" not in est.distributions:
            valid = [n for n in usable if "categorical" in REGISTRY[n].distributions]
            raise OptionError("estimator", f"{self.estimator} does not support categorical latents; valid: "
                                           f"{', '.join(valid)}")
        if self.temperature is not None and not takes_temperature(self.estimator):
            raise OptionError("temperature", f"is an option of {', '.join(n for n in usable if takes_temperature(n))}; "
                                             f"{self.estimator} has none")
        if self.protocol == "reinmax":
            latent = PROTOCOLS["reinmax"]["latent"] if self.latent is None else self.latent
            if (categories, latent) not in REINMAX_SCRIPTS and self.lr is None:
                published = ", ".join(f"{c} x {n}" for c, n in REINMAX_SCRIPTS)
                raise OptionError("categories", f"and latents of the reinmax protocol must be a published configuration "
                                                f"(classes x latents: {published}) unless --lr is given; got "
                                                f"{categories} x {latent}")

    def resolved(self) -> "VAEConfig":
        """A copy with the protocol's values in the ``None`` fields; checks ``self`` first ([`validate`][stochgrad.options.Options.validate]:
        ``OptionError``, a ``ValueError``, on bad values)."""
        self.validate()
        p = PROTOCOLS[self.protocol]
        out = VAEConfig(**asdict(self))
        for name in ("model", "batch_size", "lr", "prior_lr", "signal", "categories") + (() if self.resume else ("steps",)):
            if getattr(out, name) is None:
                setattr(out, name, p[name])
        if out.latent is None:
            out.latent = p.get("latent", 20 if out.categories else 200)
        if self.protocol == "reinmax":
            optimizer, lr, temperature = REINMAX_SCRIPTS.get((out.categories, out.latent), ("radam", None, None))
            out.lr = lr if out.lr is None else out.lr
            if out.temperature is None and temperature is not None and takes_temperature(out.estimator):
                out.temperature = temperature
        if out.samples is None:
            out.samples = max(1, REGISTRY[out.estimator]().min_samples) if out.estimator in REGISTRY else 1
        out.eval_at = tuple(int(s) for s in out.eval_at)
        return out

    def optimizer(self) -> str:
        """``"adam"`` or ``"radam"``: the protocol's (reinmax: its configuration's script)."""
        if self.protocol == "reinmax":
            return REINMAX_SCRIPTS.get((self.categories, self.latent), ("radam",))[0]
        return PROTOCOLS[self.protocol]["optimizer"]


# the settings a resumed run must share with the run that wrote the checkpoint (--force-resume overrides)
IDENTITY = ("dataset", "protocol", "model", "estimator", "signal", "seed", "lr", "prior_lr", "batch_size", "samples",
            "latent", "categories", "temperature")


class GradientVariance:
    """Moving moments of the encoder gradient: the variance reported by the VAE benchmark papers (DisARM
    code: ``compute_grad_variance``, an exponential moving average of ``g`` and ``g²``, decay 0.999 per
    step). Updated every ``every`` steps only (off the hot path), with the decay ``0.999 ** every``, so
    its memory still spans about 1,000 steps."""

    def __init__(self, decay: float = 0.999, every: int = 1):
        self.decay, self.m1, self.m2, self.weight = decay ** every, None, None, 0.0

    def update(self, params) -> float:
        g = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None]).double()
        if self.m1 is None:
            self.m1, self.m2 = torch.zeros_like(g), torch.zeros_like(g)
        self.m1.mul_(self.decay).add_((1 - self.decay) * g)
        self.m2.mul_(self.decay).add_((1 - self.decay) * g * g)
        self.weight = self.decay * self.weight + (1 - self.decay)
        return self.value()

    def value(self) -> float:
        if self.m1 is None:
            return float("nan")
        m1, m2 = self.m1 / self.weight, self.m2 / self.weight
        return (m2 - m1 * m1).mean().item()

    def state(self):
        return {"m1": self.m1, "m2": self.m2, "weight": self.weight}

    def load(self, s):
        self.m1, self.m2, self.weight = s["m1"], s["m2"], s["weight"]


def train_split(n: int, validation: int) -> int:
    """Training examples kept: all but the last ``validation`` (the published 50,000 of MNIST's 60,000);
    a dataset too small to spare them (``n < 2·validation``) is used whole."""
    return n - validation if n >= 2 * validation else n


def build(cfg: VAEConfig, x_dim: int, pixel_mean: Tensor) -> tuple[VAE, nn.Module]:
    """The model and the estimator of a resolved configuration."""
    proto = PROTOCOLS[cfg.protocol]
    options = dict(model=cfg.model, pixel_mean=pixel_mean, demean=proto["demean"],
                   signed_latents=proto["signed_latents"] and not cfg.categories, bias_init=proto["bias_init"],
                   init=proto["init"])
    dist = CATEGORICAL if cfg.categories else BERNOULLI
    model = VAE(x_dim, cfg.latent, distribution=dist, categories=max(cfg.categories, 2), **options)
    estimator = get_estimator(cfg.estimator, **({} if cfg.temperature is None else {"temperature": cfg.temperature}))
    return model, estimator


def train_vae(cfg: VAEConfig) -> dict:
    """Trains (or resumes), evaluates the test bound, writes ``metrics.csv``, ``summary.json``, a plot."""
    from tqdm import tqdm

    cfg = cfg.resolved()   # checked first (before anything is read or written): the command line's checks
    proto = PROTOCOLS[cfg.protocol]
    rank, world = distributed_from_env()
    if cfg.batch_size % world:
        fail(f"--batch-size {cfg.batch_size} must divide among {world} processes")
    main = rank == 0
    device = torch.device(cfg.device)
    train, test = datasets_or_fail(cfg.dataset)
    n_train = train_split(len(train), proto["validation"])
    if cfg.batch_size > n_train:
        fail(f"--batch-size {cfg.batch_size} exceeds the {n_train} training examples")
    ckpt_path, state = open_run(cfg, IDENTITY, main)
    if cfg.steps is None:   # a resumed run whose checkpoint names no target: the protocol's
        cfg.steps = proto["steps"]

    torch.manual_seed(cfg.seed)
    x_train = train.images[:n_train].to(device)
    model, estimator = build(cfg, train.dim, x_train.mean(0).cpu())
    model, estimator = model.to(device), estimator.to(device)
    net_params = [*model.encoder.parameters(), *model.decoder.parameters()]
    if cfg.optimizer() == "radam":
        opt = torch.optim.RAdam(net_params, lr=cfg.lr, eps=proto["adam_eps"])
    else:
        opt = torch.optim.Adam(net_params, lr=cfg.lr, eps=proto["adam_eps"])
    prior_opt = torch.optim.SGD([model.prior_logits], lr=cfg.prior_lr)
    binarize = D.binarize if proto["binarize"] else (lambda images, generator=None: images)
    clock = time.thread_time if cfg.clock == "cpu" else time.perf_counter
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    gvar = GradientVariance(every=cfg.variance_every)
    step, seconds = 0, 0.0
    perm, pos = None, n_train            # the epoch's permutation and the next position in it
    epoch_sum, epoch_count, last_epoch_elbo = 0.0, 0, None
    window, window_n, evaluations = 0.0, 0, []
    if state is not None:
        with restoring(ckpt_path):
            model.load_state_dict(state["model"])
            estimator.load_state_dict(state["estimator"])
            opt.load_state_dict(state["optimizer"])
            prior_opt.load_state_dict(state["prior_optimizer"])
            for group in opt.param_groups:   # this command's lr (the same, unless --force-resume changed it)
                group["lr"] = cfg.lr
            for group in prior_opt.param_groups:
                group["lr"] = cfg.prior_lr
            gen.set_state(state["generator"])
            gvar.load(state["gradient_variance"])
            step, seconds = counter(state, "step"), clock_of(state)
            perm, pos = (None if state["perm"] is None else state["perm"].to(device)), counter(state, "pos")
            if perm is not None and (tuple(perm.shape) != (n_train,) or pos > n_train):
                raise ValueError(f"an epoch's permutation of {tuple(perm.shape)} at {pos} does not fit {n_train} "
                                 "training examples")
            epoch_sum, epoch_count, last_epoch_elbo = (float(state["epoch_sum"]), counter(state, "epoch_count"),
                                                       state["last_epoch_elbo"])
            window, window_n = float(state["log_window"]), counter(state, "log_window_n")
            evaluations = list(state["evaluations"])
        if step >= cfg.steps or (cfg.max_seconds and seconds >= cfg.max_seconds):
            done = nothing_to_do(cfg, state, f"step {step} of {cfg.steps}") if main else {}
            if done is not None:
                return done
    net = model
    noise = gen
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model)
        noise = Sharded(gen, rank, world)   # every rank sees its slice of one process's noise
    local = cfg.batch_size // world
    metrics = Metrics(os.path.join(cfg.out, "metrics.csv"),
                      ["step", "train_elbo", "seconds", "encoder_grad_variance"],
                      resume_step=step if state is not None else None, enabled=main, tensorboard=cfg.tensorboard)

    saved = step if state is not None else None

    def stop(why: str):
        stop_training(why, saved, bar)

    def check_parameters():  # at log and checkpoint steps, not every step: one pass over the parameters
        stop_if_diverged(model, step, saved, bar)

    def checkpoint():
        nonlocal saved
        check_parameters()
        if main:
            try:
                save_checkpoint({"step": step, "seconds": seconds, "model": model.state_dict(),
                                 "estimator": estimator.state_dict(), "optimizer": opt.state_dict(),
                                 "prior_optimizer": prior_opt.state_dict(), "generator": gen.get_state(),
                                 "gradient_variance": gvar.state(), "perm": perm, "pos": pos, "epoch_sum": epoch_sum,
                                 "epoch_count": epoch_count, "last_epoch_elbo": last_epoch_elbo,
                                 "log_window": window, "log_window_n": window_n, "evaluations": evaluations,
                                 "config": asdict(cfg)}, ckpt_path)
            except NonFiniteError as err:
                stop(f"at step {step} {err}")
            except CheckpointError as err:
                stop(str(err))
        saved = step

    def train_elbo_report() -> float:   # the last full epoch's mean one-sample ELBO, else the epoch so far
        if epoch_count == n_train // cfg.batch_size or last_epoch_elbo is None:   # the current epoch is complete
            return epoch_sum / max(epoch_count, 1)
        return last_epoch_elbo

    bar = tqdm(total=cfg.steps, initial=step, desc=f"vae {cfg.estimator}", disable=not (cfg.progress and main))
    gv = gvar.value()
    while step < cfg.steps and not (cfg.max_seconds and seconds >= cfg.max_seconds):
        t0 = clock()
        if pos + cfg.batch_size > n_train:   # a new epoch: a fresh permutation of the training split
            if epoch_count:
                last_epoch_elbo, epoch_sum, epoch_count = epoch_sum / epoch_count, 0.0, 0
            perm, pos = torch.randperm(n_train, generator=gen, device=device), 0
        idx = perm[pos + rank * local: pos + (rank + 1) * local]
        pos += cfg.batch_size
        x = binarize(x_train[idx], noise)
        try:
            mean_loss = net(x, estimator, cfg.samples, noise, cfg.signal).mean()
        except ValueError:  # non-finite logits: say why, if the parameters diverged
            check_parameters()
            raise
        value = all_mean(-mean_loss.item())
        if not math.isfinite(value):
            stop(f"the loss became {-value} at step {step + 1}")
        opt.zero_grad()
        prior_opt.zero_grad()
        mean_loss.backward()
        step += 1
        if step % cfg.variance_every == 0:   # the diagnostic, off the hot path
            gv = gvar.update(model.encoder.parameters())
        opt.step()
        prior_opt.step()
        seconds += clock() - t0
        window, window_n = window + value, window_n + 1
        epoch_sum, epoch_count = epoch_sum + value, epoch_count + 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            metrics.write(step=step, train_elbo=window / window_n, seconds=seconds, encoder_grad_variance=gv)
            bar.set_postfix(elbo=f"{window / window_n:.2f}")
            window, window_n = 0.0, 0
            check_parameters()
        if step in cfg.eval_at and main:
            evaluations.append({"step": step, "train_seconds": seconds, "train_elbo_last_epoch": train_elbo_report(),
                                **test_bounds(model, test, cfg, device)})
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint()
        bar.update()
    bar.close()
    if saved != step:
        checkpoint()
    if not main:
        return {}
    n = cfg.test_examples or len(test)   # the bounds' images: test, and as many training images
    final = tqdm(total=n * (2 if cfg.train_bound else 1), unit="image", disable=not cfg.progress,
                 desc=f"vae: the {cfg.test_samples}-sample bound on {n} test" + (" and training" * cfg.train_bound)
                 + " images")
    summary = {"estimator": cfg.estimator, "protocol": cfg.protocol, "model": cfg.model, "dataset": cfg.dataset,
               "latents": cfg.latent, "categories": cfg.categories, "temperature": cfg.temperature,
               "optimizer": cfg.optimizer(), "signal": cfg.signal, "batch_size": cfg.batch_size, "lr": cfg.lr,
               "steps": step, "epochs": step * cfg.batch_size / n_train, "clock": cfg.clock, "train_seconds": seconds,
               "steps_per_second": step / seconds if seconds else float("nan"),
               "train_examples": n_train, "train_elbo_last_epoch": train_elbo_report(),
               **test_bounds(model, test, cfg, device, final.update), "evaluations": evaluations}
    if cfg.train_bound:
        with torch.no_grad():   # the same bound on as many training images as test images were used
            gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)
            bounds = []
            for c in x_train[:n].split(500):
                bounds.append(model.iw_bound(binarize(c, gen), cfg.test_samples, gen))
                final.update(len(c))
            summary[f"train_elbo_{cfg.test_samples}_samples"] = torch.cat(bounds).mean().item()
    final.close()
    if hasattr(estimator, "report"):   # auto: what it chose over the run, and why
        summary["auto"] = estimator.report()
    write_json(os.path.join(cfg.out, "summary.json"), summary)
    rows = metrics.read()
    plot_curves(os.path.join(cfg.out, "curves.png"), rows, "step", ["train_elbo", "encoder_grad_variance"],
                f"VAE {cfg.model} on {cfg.dataset}, {cfg.estimator} ({cfg.protocol} protocol)")
    return summary


@torch.no_grad()
def test_bounds(model: VAE, test, cfg: VAEConfig, device, progress=None) -> dict:
    """The ``cfg.test_samples``-sample bound, the one-sample ELBO and, with ``signal="analytic_kl"``, the
    one-sample ELBO with the exact KL, on the test set (their own generator, so an evaluation never moves
    the training noise); ``progress(images)`` is called after each chunk."""
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    x_test = test.images.to(device)
    if cfg.test_examples:
        x_test = x_test[: cfg.test_examples]
    binarize = D.binarize if PROTOCOLS[cfg.protocol]["binarize"] else (lambda images, generator=None: images)
    bounds, one, analytic = [], [], []
    for chunk in x_test.split(500):
        x = binarize(chunk, gen)
        bounds.append(model.iw_bound(x, cfg.test_samples, gen))
        one.append(model.iw_bound(x, 1, gen))
        if cfg.signal == "analytic_kl":
            analytic.append(model.elbo_analytic_kl(x, gen))
        if progress is not None:
            progress(len(chunk))
    out = {f"test_elbo_{cfg.test_samples}_samples": torch.cat(bounds).mean().item(),
           "test_elbo_1_sample": torch.cat(one).mean().item()}
    if analytic:
        out["test_elbo_1_sample_analytic_kl"] = torch.cat(analytic).mean().item()
    return out
