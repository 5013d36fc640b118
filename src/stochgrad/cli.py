"""The ``stochgrad`` command line."""
from __future__ import annotations

import argparse
import sys

import torch

from .options import (DEVICE, FOLDER, FRACTION, NON_NEGATIVE, NON_NEGATIVE_FLOAT, POSITIVE, POSITIVE_FLOAT, SEED,
                      OptionError, integer)


# every numeric or path flag is checked where it is parsed, one line naming it, by the kind of value of the
# configuration field it fills (stochgrad.options: the same check and words as a Python caller gets)
def _config(args, cls, **fields):
    """``cls(**fields)``; a setting that depends on another (which no single flag's check sees) is one line
    naming its flag."""
    try:
        return cls(**fields)
    except OptionError as err:
        args.parser.error(f"argument --{err.name.replace('_', '-')}: {err.problem}")


def _estimator_names(text: str | None) -> list[str]:
    from .estimators import REGISTRY

    names = [n for n in REGISTRY if n != "exact"] if not text else [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise SystemExit(f"stochgrad: unknown estimator(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    return names


def cmd_check(args) -> int:
    """Every estimator against exact enumeration on the built-in problems; non-zero exit on a failure."""
    from tqdm import tqdm

    from . import problems
    from .checks import check_unbiased
    from .estimators import REGISTRY, get_estimator

    names = _estimator_names(args.estimators)
    suite = problems.suite()
    dist = None
    if getattr(args, "categorical", False):  # the categorical problems, the estimators made for them
        suite, dist = problems.categorical_suite(), "categorical"
        names = [n for n in names if "categorical" in REGISTRY[n].distributions]
    rows, failed = [], []
    bar = tqdm(total=len(names) * len(suite), desc="check", unit="case", file=sys.stderr, disable=args.quiet)
    for name in names:
        results = []
        for p in suite:
            est = get_estimator(name)  # a fresh object per site
            results.append(check_unbiased(est, p.f, p.logits, estimates=args.estimates, batch=args.batch,
                                          samples=max(args.samples, est.min_samples),
                                          generator=torch.Generator().manual_seed(args.seed),
                                          threshold=args.threshold, warmup=args.warmup, distribution=dist))
            bar.update()
        if est.unbiased:
            ok = all(r.passed for r in results)
            verdict = "unbiased: ok" if ok else "FAIL: bias detected"
            failed += [] if ok else [name]
        else:
            verdict = "biased, as declared" if any(r.bias_detected for r in results) else "no bias detected"
        rows.append((name, "yes" if est.unbiased else "no", max(r.max_abs_z for r in results),
                     *[r.relative_variance for r in results], verdict))
    bar.close()
    head = ("estimator", "unbiased?", "max |z|", *[f"relvar {p.name}" for p in suite], "verdict")
    widths = [max(len(head[i]), *(len(_fmt(r[i])) for r in rows)) for i in range(len(head))]
    print(f"stochgrad check: {args.estimates} estimates per problem, samples={args.samples}, "
          f"|z| threshold {args.threshold} (z = bias / standard error, per coordinate)")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(_fmt(v).ljust(w) for v, w in zip(r, widths)))
    print("problems: " + "; ".join(f"{p.name}: {p.description}" for p in suite))
    if failed:
        print(f"FAILED: declared unbiased but bias detected: {', '.join(failed)}")
        return 1
    print("all estimators declared unbiased passed")
    return 0


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"
    return str(v)


def cmd_compare(args) -> int:
    """The estimator study: bias, variance, cost, variance against D, optimisation race."""
    from .studies import compare

    cfg = compare.Config.make(quick=args.quick, estimators=_estimator_names(args.estimators), device=args.device,
                              seed=args.seed)
    results = compare.run(cfg, args.out, progress=not args.quiet)
    print(f"wrote {args.out}/report.md, results.json, timings.json and plots in {results['wall_seconds']:.0f} s")
    for line in results["findings"] + results["timing_findings"] + results["scaling_sentences"]:
        print("-", line.replace("**", "").replace("`", ""))
    if results["quick_vs_full"]:
        print("This quick run's scaling conclusions differ from the full run's here (trust the full run):")
        for line in results["quick_vs_full"]:
            print("-", line.replace("`", ""))
    return 0


def cmd_train_vae(args) -> int:
    """``stochgrad train vae``: the binary-latent VAE benchmark."""
    from .studies.vae import VAEConfig, train_vae

    cfg = _config(args, VAEConfig, dataset=args.dataset, protocol=args.protocol, model=args.model, estimator=args.estimator,
                    steps=args.steps, batch_size=args.batch_size, lr=args.lr, prior_lr=args.prior_lr,
                    signal=args.signal, seed=args.seed, device=args.device, out=args.out,
                    resume=args.resume or args.force_resume, force_resume=args.force_resume,
                    samples=args.samples, log_every=args.log_every,
                    checkpoint_every=args.checkpoint_every, variance_every=args.variance_every,
                    eval_at=tuple(args.eval_at), max_seconds=args.max_seconds, test_samples=args.test_samples,
                    test_examples=args.test_examples, progress=not args.quiet, categories=args.categories,
                    latent=args.latents, temperature=args.temperature, clock=args.clock,
                    tensorboard=args.tensorboard, train_bound=args.train_bound)
    summary = train_vae(cfg)
    if summary:
        _print_summary(summary)
    return 0


def cmd_train_gating(args) -> int:
    """``stochgrad train gating``: conditional computation with stochastic gates."""
    from .studies.gating import GatingConfig, train_gating

    summary = train_gating(_config(args, GatingConfig, dataset=args.dataset, gater=args.gater, epochs=args.epochs,
                                        batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
                                        out=args.out, target=args.target, sparsity_weight=args.sparsity_weight,
                                        rate_control=args.rate_control, expert=args.expert, patience=args.patience,
                                        max_seconds=args.max_seconds, resume=args.resume, progress=not args.quiet, tensorboard=args.tensorboard))
    _print_summary(summary)
    return 0


def _print_summary(summary: dict) -> None:
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))


def cmd_train_rbm(args) -> int:
    """``stochgrad train rbm``: an RBM by CD-k or PCD."""
    from .studies.rbm import RBMConfig, train_rbm

    _print_summary(train_rbm(_config(args, RBMConfig, dataset=args.dataset, hidden=args.hidden, method=args.method, k=args.k,
                                       steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                       out=args.out, resume=args.resume, progress=not args.quiet, tensorboard=args.tensorboard)))
    return 0


def cmd_train_hashing(args) -> int:
    """``stochgrad train hashing``: binary codes for retrieval."""
    from .studies.hashing import HashingConfig, train_hashing

    summary = train_hashing(_config(args, HashingConfig, dataset=args.dataset, estimator=args.estimator, bits=args.bits,
                                          steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                          out=args.out, resume=args.resume, progress=not args.quiet, tensorboard=args.tensorboard))
    for name, r in summary["retrieval"].items():
        print(f"{name:12s} " + " ".join(f"{k}={v:.4f}" for k, v in r.items()))
    return 0


def cmd_train_bandit(args) -> int:
    """``stochgrad train bandit``: the multiplexer from a (delayed) broadcast reward."""
    from .studies.bandit import BanditConfig, train_bandit

    _print_summary(train_bandit(_config(args, BanditConfig, estimator=args.estimator, delay=args.delay, steps=args.steps,
                                             batch_size=args.batch_size, hidden=args.hidden, lr=args.lr,
                                             seed=args.seed, out=args.out, resume=args.resume,
                                             progress=not args.quiet, tensorboard=args.tensorboard)))
    return 0


def cmd_estimators(args) -> int:
    """``stochgrad estimators``: the registry, one line each."""
    from .estimators import estimators

    for name, info in estimators().items():
        print(f"{name:26s} {info}")
    return 0


def _add_threads(p: argparse.ArgumentParser) -> None:
    from .runinfo import DEFAULT_THREADS

    p.add_argument("--threads", type=POSITIVE, default=DEFAULT_THREADS,
                   help=f"torch intra-op threads (default {DEFAULT_THREADS}: fastest for these small tensors)")


def _trainer(sub, name: str, help: str, run, dataset: bool = True) -> argparse.ArgumentParser:
    """A ``stochgrad train NAME`` parser with the flags every trainer shares."""
    p = sub.add_parser(name, help=help)
    _add_threads(p)
    if dataset:
        p.add_argument("--dataset", default="mnist", help="mnist, fashion-mnist or digits")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--out", type=FOLDER, default=f"runs/{name}", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log the metrics to OUT/tensorboard (needs the tensorboard extra)")
    p.set_defaults(run=run, parser=p)
    if name != "vae":   # vae declares its own
        p.add_argument("--resume", action="store_true", help="continue exactly from DIR/checkpoint.pt")
    return p


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default (unless its help already says it)."""

    def _get_help_string(self, action):
        if "default" in (action.help or "") or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An argument parser (and, being the parser class of its sub-commands, theirs too) whose ``--help``
    shows the defaults; an option given without help text is described by its name."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        """A bad flag is one line: ``stochgrad train vae: error: argument --lr: must be ... (see ... --help)``."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def add_argument(self, *args, **kwargs):
        if kwargs.get("help") is None and args and args[0].startswith("--") and kwargs.get("action") != "version":
            name = args[0].lstrip("-")
            kwargs["help"] = {"lr": "learning rate", "seed": "random seed"}.get(name, name.replace("-", " "))
        return super().add_argument(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The ``stochgrad`` argument parser: one sub-command per function ``cmd_*`` of this module."""
    from . import __version__
    from .checks import MIN_ESTIMATES

    parser = _Parser(prog="stochgrad", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} (torch {torch.__version__})")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="test every estimator against exact enumeration")
    p.add_argument("--categorical", action="store_true",
                   help="the categorical problems (3 units of 4 classes) and the estimators that support them")
    p.add_argument("--estimators", help="comma-separated names (default: all)")
    p.add_argument("--estimates", type=integer(MIN_ESTIMATES), default=10000,
                   help=f"gradient estimates per problem (at least {MIN_ESTIMATES}: the z-test estimates their variance)")
    p.add_argument("--batch", type=POSITIVE, default=500, help="estimates per call (stateful estimators update per call)")
    p.add_argument("--samples", type=POSITIVE, default=2, help="samples per estimate")
    p.add_argument("--warmup", type=NON_NEGATIVE, default=5, help="calls discarded first (baselines, tuning)")
    p.add_argument("--threshold", type=POSITIVE_FLOAT, default=4.0, help="largest |z| allowed of an unbiased estimator")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_threads(p)
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("compare", help="the estimator study: bias, variance, cost, scaling with D, race")
    p.add_argument("--quick", action="store_true", help="a smaller study (a few minutes on 2 cores); says where its scaling conclusions differ from the full run's")
    p.add_argument("--out", type=FOLDER, default="runs/compare", help="output folder (report.md, results.json: same seed, same bytes; timings.json; plots)")
    p.add_argument("--estimators", help="comma-separated names (default: all but exact)")
    p.add_argument("--device", type=DEVICE, default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_threads(p)
    p.set_defaults(run=cmd_compare)

    train = sub.add_parser("train", help="train a model: vae, gating, rbm, hashing, bandit").add_subparsers(dest="model_kind", required=True)
    p = _trainer(train, "vae", "the VAE benchmark (Bernoulli or categorical latents)", cmd_train_vae)
    p.add_argument("--protocol", default="disarm", choices=["disarm", "rodeo", "reinmax"],
                   help="published set-up whose defaults fill the flags left out (disarm: linear, batch 50, "
                        "Adam 1e-4, prior SGD 1e-2; rodeo: nonlinear, batch 100, Adam 1e-3, prior fixed; reinmax: "
                        "30 x 10-class latents, 784-512-256 ReLU, batch 100, 160 epochs, the script's RAdam lr and "
                        "temperature, exact KL)")
    p.add_argument("--model", default=None, choices=["linear", "nonlinear", "relu_512_256"],
                   help="default: the protocol's")
    p.add_argument("--estimator", default="disarm")
    p.add_argument("--steps", type=POSITIVE, default=None,
                   help="default: the protocol's (1,000,000; reinmax: 96,000, 160 epochs)")
    p.add_argument("--batch-size", type=POSITIVE, default=None)
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=None,
                   help="the optimiser's (Adam; reinmax: its script's), for encoder and decoder")
    p.add_argument("--prior-lr", type=NON_NEGATIVE_FLOAT, default=None, help="SGD's, for the prior logits (0: fixed prior)")
    p.add_argument("--signal", default=None, choices=["elbo", "analytic_kl"],
                   help="what the estimator sees: the per-example ELBO term or -log p(x|b) + exact KL "
                        "(default: the protocol's; elbo, reinmax: analytic_kl)")
    p.add_argument("--temperature", type=POSITIVE_FLOAT, default=None,
                   help="the estimator's temperature (default: the reinmax protocol's, else the estimator's)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="what --max-seconds and the seconds column measure: wall time or the training thread's "
                        "CPU time (a budget other processes cannot eat into)")
    p.add_argument("--samples", type=POSITIVE, default=None,
                   help="samples (antithetic pairs) per estimate; default: the estimator's minimum")
    p.add_argument("--device", type=DEVICE, default="cpu")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    p.add_argument("--force-resume", action="store_true",
                   help="with --resume: continue even if the checkpoint's estimator/model/data/seed/lr/batch differ")
    p.add_argument("--log-every", type=POSITIVE, default=100)
    p.add_argument("--checkpoint-every", type=POSITIVE, default=1000)
    p.add_argument("--variance-every", type=POSITIVE, default=10, help="steps between encoder-gradient-variance updates")
    p.add_argument("--eval-at", type=POSITIVE, nargs="*", default=[], help="steps at which to evaluate the test bounds too")
    p.add_argument("--max-seconds", type=NON_NEGATIVE_FLOAT, default=0.0, help="stop once training has taken this long (0: never)")
    p.add_argument("--test-samples", type=POSITIVE, default=100, help="samples of the importance-weighted test bound")
    p.add_argument("--test-examples", type=NON_NEGATIVE, default=0, help="test examples to evaluate (0: all)")
    p.add_argument("--no-train-bound", dest="train_bound", action="store_false",
                   help="skip the summary's bound on as many training images (one evaluation less)")
    p.add_argument("--categories", type=NON_NEGATIVE, default=None,
                   help="0: Bernoulli latents; K >= 2: categorical latents of K classes (default: the protocol's; "
                        "0, reinmax: 10)")
    p.add_argument("--latents", type=POSITIVE, default=None,
                   help="latent variables (default 200 Bernoulli, 20 categorical; reinmax: 30)")

    p = _trainer(train, "gating", "conditional computation: stochastic gates on MNIST", cmd_train_gating)
    p.add_argument("--gater", default="straight_through",
                   help="straight_through, reinforce_optimal (the unbiased gater), stochastic_times_smooth, sigmoid, "
                        "sigmoid_noise, noisy_rectifier, rectifier")
    p.add_argument("--epochs", type=POSITIVE, default=100, help="epochs over the training split (early stopping on validation)")
    p.add_argument("--patience", type=POSITIVE, default=20, help="epochs without a better validation error before stopping")
    p.add_argument("--target", type=FRACTION, default=0.1, help="fraction of gates open")
    p.add_argument("--sparsity-weight", type=NON_NEGATIVE_FLOAT, default=0.1,
                   help="weight of the KL penalty (sigmoid family) / start of the adaptive L1 (rectifiers, x1e-2)")
    p.add_argument("--rate-control", action="store_true", help="also seed section 2's per-unit firing-rate control")
    p.add_argument("--expert", default="linear", choices=["linear", "relu"],
                   help="the expert path's units: linear (the paper notes) or relu (a deviation, to test whether the "
                        "paper's experts were non-linear)")
    p.add_argument("--max-seconds", type=NON_NEGATIVE_FLOAT, default=0.0, help="stop after the epoch that passes this training time")
    p.add_argument("--batch-size", type=POSITIVE, default=32)
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=0.1)
    p.add_argument("--device", type=DEVICE, default="cpu")

    p = _trainer(train, "rbm", "a restricted Boltzmann machine by CD-k or PCD (reward correlation, §4.2)", cmd_train_rbm)
    p.add_argument("--hidden", type=POSITIVE, default=100)
    p.add_argument("--method", default="pcd", choices=["cd", "pcd"])
    p.add_argument("--k", type=POSITIVE, default=1, help="Gibbs steps per update")
    p.add_argument("--steps", type=POSITIVE, default=5000)
    p.add_argument("--batch-size", type=POSITIVE, default=100)
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=0.05)

    p = _trainer(train, "hashing", "semantic hashing: binary codes from a stochastic code layer", cmd_train_hashing)
    p.add_argument("--estimator", default="straight_through", help="any layer estimator (pathwise or reinforce*)")
    p.add_argument("--bits", type=POSITIVE, default=32)
    p.add_argument("--steps", type=POSITIVE, default=5000)
    p.add_argument("--batch-size", type=POSITIVE, default=100)
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=1e-3)

    p = _trainer(train, "bandit", "the 6-bit multiplexer learned from a (delayed) broadcast reward", cmd_train_bandit, dataset=False)
    p.add_argument("--estimator", default="reinforce_optimal", help="reinforce, reinforce_ma or reinforce_optimal")
    p.add_argument("--delay", type=NON_NEGATIVE, default=0, help="steps between a decision and its reward")
    p.add_argument("--steps", type=POSITIVE, default=4000)
    p.add_argument("--batch-size", type=POSITIVE, default=64)
    p.add_argument("--hidden", type=POSITIVE, default=32)
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=1.0)

    p = sub.add_parser("estimators", help="list the registered estimators")
    p.set_defaults(run=cmd_estimators)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``stochgrad`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None) is not None:
        from .runinfo import set_threads

        set_threads(args.threads)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
