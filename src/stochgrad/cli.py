"""The ``stochgrad`` command line.

Every flag is checked where it is parsed, in one line naming it, by the kind of value of the configuration field it
fills ([`stochgrad.options`][stochgrad.options]: the same check and words as a Python caller gets). The ``train``
commands share their flags through one configuration base
([`RunConfig`][stochgrad.studies.training.RunConfig]): ``--steps --batch-size --lr --seed --out --resume
--force-resume --force --log-every --checkpoint-every --tensorboard --threads --quiet`` mean the same everywhere.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

from .options import FOLDER, NON_NEGATIVE, POSITIVE, POSITIVE_FLOAT, SEED, THREADS, OptionError, integer

#: how long ``stochgrad compare`` takes at its defaults on the project's 2-core machine (one thread, shared with
#: other jobs): the README says the same
COMPARE_MINUTES, COMPARE_QUICK_MINUTES = "5 minutes", "about 1 minute"

# flags whose configuration field has another name
_FIELD = {"latents": "latent"}


def _config(args, cls, **fields):
    """``cls(**fields)`` with every field of ``cls`` that a flag of the same name (``_FIELD``) filled added; a
    setting that depends on another (which no single flag's check sees) is one line naming its flag."""
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            flag = next((k for k, v in _FIELD.items() if v == f.name), f.name)
            if f.name not in fields and hasattr(args, flag):
                fields[f.name] = getattr(args, flag)
        if "progress" in {f.name for f in dataclasses.fields(cls)}:
            fields.setdefault("progress", not args.quiet)
        if getattr(args, "force_resume", False):   # --force-resume is a --resume
            fields["resume"] = True
    try:
        return cls(**fields)
    except OptionError as err:
        args.parser.error(f"argument --{err.name.replace('_', '-')}: {err.problem}")


def _fail(message: str) -> None:
    print(f"stochgrad: {message}", file=sys.stderr)
    raise SystemExit(2)


def _estimator_names(args) -> list[str]:
    from .estimators import REGISTRY
    from .options import unknown_names

    text = args.estimators
    names = [n for n in REGISTRY if n != "exact"] if not text else [s.strip() for s in text.split(",") if s.strip()]
    problem = unknown_names(names, REGISTRY)
    if problem:
        args.parser.error(f"argument --estimators: {problem}")
    return names


def cmd_check(args) -> int:
    """Every estimator against exact enumeration on the built-in problems; non-zero exit on a failure."""
    from tqdm import tqdm

    from . import problems
    from .checks import check_unbiased
    from .estimators import REGISTRY, get_estimator

    names = _estimator_names(args)
    dist = "categorical" if args.categorical else args.distribution
    suite = problems.categorical_suite() if dist == "categorical" else problems.suite()
    unfit = [n for n in names if dist not in REGISTRY[n].distributions]
    if unfit and args.estimators:
        print(f"stochgrad check: skipped, no {dist} units: {', '.join(unfit)}", file=sys.stderr)
    names = [n for n in names if n not in unfit]   # the estimators made for these units
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
    print(f"stochgrad check: {args.estimates} estimates per problem, samples={args.samples}, "
          f"|z| threshold {args.threshold} (z = bias / standard error, per coordinate)")
    _table(head, rows)
    print("problems: " + "; ".join(f"{p.name}: {p.description}" for p in suite))
    if failed:
        print(f"FAILED: declared unbiased but bias detected: {', '.join(failed)}")
        return 1
    print("all estimators declared unbiased passed")
    return 0


def _table(head, rows) -> None:
    widths = [max(len(head[i]), *(len(_fmt(r[i])) for r in rows)) for i in range(len(head))]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(_fmt(v).ljust(w) for v, w in zip(r, widths)).rstrip())


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"
    return str(v)


def cmd_compare(args) -> int:
    """The estimator study: bias, variance, cost, variance against D, optimisation race; resumable."""
    from .studies import compare

    cfg = _config(args, compare.Config.make, quick=args.quick, estimators=_estimator_names(args), device=args.device,
                  seed=args.seed)
    try:
        results = compare.run(cfg, args.out, progress=not args.quiet, resume=args.resume, force=args.force)
    except compare.RunError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        print(f"\nstochgrad compare: interrupted; every finished measurement is kept in {args.out}/{compare.STATE} "
              f"(and the parts finished so far in {args.out}/report.md): the same command with --resume finishes "
              "it", file=sys.stderr)
        return 130
    if results.get("already_complete"):
        print(f"stochgrad compare: {args.out} is already complete: nothing to do (its report: {args.out}/report.md)")
        return 0
    print(f"wrote {args.out}/report.md, results.json, timings.json and plots in {results['wall_seconds']:.0f} s")
    for line in results["findings"]:
        if "at equal f-evaluations" in line or "biased here" in line:
            print("-", line.split(" (variance")[0].replace("**", "").replace("`", "") + ".")
    if results["limits"]:
        print(f"- the expensive estimators' sizes were limited in {len(results['limits'])} places "
              "(report.md, 'Sizes')")
    if results["quick_vs_full"]:
        print(f"- this quick run's scaling conclusions differ from the full run's in {len(results['quick_vs_full'])} "
              "places (report.md)")
    return 0


def _print_summary(summary: dict) -> None:
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()
                   if not isinstance(v, (dict, list))))


def cmd_train_vae(args) -> int:
    """``stochgrad train vae``: the binary-latent VAE benchmark."""
    from .studies.vae import VAEConfig, train_vae

    summary = train_vae(_config(args, VAEConfig, eval_at=tuple(args.eval_at)))
    if summary:
        _print_summary(summary)
    return 0


def cmd_train_gating(args) -> int:
    """``stochgrad train gating``: conditional computation with stochastic gates."""
    from .studies.gating import GatingConfig, train_gating

    _print_summary(train_gating(_config(args, GatingConfig)))
    return 0


def cmd_train_rbm(args) -> int:
    """``stochgrad train rbm``: an RBM by CD-k or PCD."""
    from .studies.rbm import RBMConfig, train_rbm

    _print_summary(train_rbm(_config(args, RBMConfig)))
    return 0


def cmd_train_hashing(args) -> int:
    """``stochgrad train hashing``: binary codes for retrieval."""
    from .studies.hashing import HashingConfig, train_hashing

    summary = train_hashing(_config(args, HashingConfig))
    for name, r in summary["retrieval"].items():
        print(f"{name:12s} " + " ".join(f"{k}={v:.4f}" for k, v in r.items()))
    return 0


def cmd_train_bandit(args) -> int:
    """``stochgrad train bandit``: the multiplexer from a (delayed) broadcast reward."""
    from .studies.bandit import BanditConfig, train_bandit

    _print_summary(train_bandit(_config(args, BanditConfig)))
    return 0


def cmd_estimators(args) -> int:
    """``stochgrad estimators``: the registry, one line each, and what the columns mean."""
    from .estimators import estimators

    rows = []
    for name, info in estimators().items():
        route = "pathwise" if info.pathwise else "needs L" if info.broadcast else "expect only"
        cost = info.cost + (f", S >= {info.min_samples}" if info.min_samples > 1 else "")
        rows.append((name, "yes" if info.unbiased else "no", route, cost,
                     "+categorical" if "categorical" in info.distributions else "bernoulli", info.description))
    _table(("estimator", "unbiased", "as a layer", "f evaluations", "units", "what it is"), rows)
    print("\nunbiased: declared, and tested against exact enumeration (stochgrad check). as a layer (StochasticBinary): "
          "pathwise = plain autograd; needs L = the per-example loss from sg.broadcast(); expect only = calls f "
          "itself, so only sg.expect. f evaluations: of f per example and estimate; S = samples, n = units, "
          "+ backward = also a backward pass through f, + meas. = auto's measuring calls on top. units: bernoulli, "
          "or also categorical (one of K classes).")
    return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default (unless its help already says it, or it is an on/off switch)."""

    def _get_help_string(self, action):
        if ("default" in (action.help or "") or action.default is None or action.default is False
                or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An argument parser (and, being the parser class of its sub-commands, theirs too) whose ``--help``
    shows the defaults; an option given without help text is described by its name."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        """A bad flag is one line naming it and this (sub-)command's help:
        ``stochgrad train vae: error: argument --lr: must be ... (see stochgrad train vae --help)``."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def add_argument(self, *args, **kwargs):
        if kwargs.get("help") is None and args and args[0].startswith("--") and kwargs.get("action") != "version":
            name = args[0].lstrip("-")
            kwargs["help"] = {"lr": "learning rate", "seed": "random seed"}.get(name, name.replace("-", " "))
        return super().add_argument(*args, **kwargs)


def _add_common(p: argparse.ArgumentParser) -> None:
    from .runinfo import DEFAULT_THREADS

    p.add_argument("--threads", type=THREADS, default=DEFAULT_THREADS,
                   help=f"torch intra-op threads (default {DEFAULT_THREADS}: fastest for these small tensors, and "
                        "what a shared machine needs; raise it for large models on idle cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _trainer(sub, name: str, help: str, run, cls, steps_help: str | None = None) -> argparse.ArgumentParser:
    """A ``stochgrad train NAME`` parser with the flags every trainer shares, each of the kind its configuration
    field declares (``cls.OPTIONS``) and with its default."""
    d = {f.name: f.default for f in dataclasses.fields(cls)}
    kind = cls.OPTIONS
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(run=run, parser=p)
    if "dataset" in d:
        p.add_argument("--dataset", type=kind["dataset"], default=d["dataset"], help="mnist, fashion-mnist or digits")
    p.add_argument("--steps", type=kind["steps"], default=None,
                   help=steps_help or f"training steps (default: {cls.STEPS}; with --resume, the checkpoint's own "
                                      "target)")
    p.add_argument("--batch-size", type=kind["batch_size"], default=d["batch_size"])
    p.add_argument("--lr", type=kind["lr"], default=d["lr"])
    p.add_argument("--seed", type=kind["seed"], default=d["seed"])
    p.add_argument("--out", type=kind["out"], default=f"runs/{name}", help="output folder")
    p.add_argument("--resume", action="store_true",
                   help="continue exactly from OUT/checkpoint.pt (to its own --steps unless given); says so when "
                        "there is nothing left to do")
    p.add_argument("--force-resume", action="store_true",
                   help="--resume even if the checkpoint's settings (model, data, seed, lr, batch, ...) differ")
    p.add_argument("--force", action="store_true",
                   help="start afresh in an OUT that holds an earlier run (its checkpoint is kept as "
                        "checkpoint.pt.previous)")
    p.add_argument("--log-every", type=kind["log_every"], default=d["log_every"], help="steps between metrics rows")
    p.add_argument("--checkpoint-every", type=kind["checkpoint_every"], default=d["checkpoint_every"],
                   help="steps between checkpoints")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log the metrics to OUT/tensorboard (needs the tensorboard extra)")
    _add_common(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The ``stochgrad`` argument parser: one sub-command per function ``cmd_*`` of this module."""
    from . import __version__
    from .checks import MIN_ESTIMATES
    from .studies.bandit import BanditConfig
    from .studies.gating import EXPERTS, GATERS, GatingConfig
    from .studies.hashing import HashingConfig
    from .studies.rbm import RBMConfig
    from .studies.vae import CLOCKS, MODELS, PROTOCOLS, SIGNALS, VAEConfig

    parser = _Parser(prog="stochgrad", description=__doc__.splitlines()[0] + " Run `stochgrad COMMAND --help` for "
                                                                             "a command's flags.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} (torch {torch.__version__})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check", help="test every estimator against exact enumeration")
    p.set_defaults(run=cmd_check, parser=p)
    p.add_argument("--distribution", choices=("bernoulli", "categorical"), default="bernoulli",
                   help="the units: Bernoulli problems (default), or categorical ones (3 units of 4 classes); the "
                        "estimators that support them")
    p.add_argument("--categorical", action="store_true", help="the same as --distribution categorical")
    p.add_argument("--estimators", help="comma-separated names (default: all)")
    p.add_argument("--estimates", type=integer(MIN_ESTIMATES), default=10000,
                   help=f"gradient estimates per problem (at least {MIN_ESTIMATES}: the z-test estimates their variance)")
    p.add_argument("--batch", type=POSITIVE, default=500, help="estimates per call (stateful estimators update per call)")
    p.add_argument("--samples", type=POSITIVE, default=2, help="samples per estimate")
    p.add_argument("--warmup", type=NON_NEGATIVE, default=5, help="calls discarded first (baselines, tuning)")
    p.add_argument("--threshold", type=POSITIVE_FLOAT, default=4.0, help="largest |z| allowed of an unbiased estimator")
    p.add_argument("--seed", type=SEED, default=0)
    _add_common(p)

    from .options import DEVICE

    p = sub.add_parser("compare", help=f"the estimator study: bias, variance, cost, scaling with D, race (about "
                                       f"{COMPARE_MINUTES} on 2 cores; resumable)",
                       description=f"The estimator study: bias, variance and cost of every estimator, how variance "
                                   f"scales with the number of units, an optimisation race; Bernoulli and categorical "
                                   f"units. About {COMPARE_MINUTES} at the defaults on a 2-core machine "
                                   f"(--quick: {COMPARE_QUICK_MINUTES}). Writes report.md, results.json, plots into "
                                   "--out after each part; an interrupted run finishes with --resume.")
    p.set_defaults(run=cmd_compare, parser=p)
    p.add_argument("--quick", action="store_true", help=f"a smaller study ({COMPARE_QUICK_MINUTES} on 2 cores); says "
                                                        "where its scaling conclusions differ from the full run's")
    p.add_argument("--out", type=FOLDER, default="runs/compare", help="output folder (report.md, results.json: same seed, same bytes; timings.json; plots)")
    p.add_argument("--resume", action="store_true", help="finish the interrupted run in --out (same flags): what it "
                                                         "measured is kept, and the results are the same")
    p.add_argument("--force", action="store_true", help="replace an earlier run's outputs in --out")
    p.add_argument("--estimators", help="comma-separated names (default: all but exact)")
    p.add_argument("--device", type=DEVICE, default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=SEED, default=0)
    _add_common(p)

    train = sub.add_parser("train", help="train a model: vae, gating, rbm, hashing, bandit",
                           description="Train a model: vae, gating, rbm, hashing, bandit. Run `stochgrad train MODEL "
                                       "--help` for a model's flags.")
    train.set_defaults(parser=train)
    train = train.add_subparsers(dest="model_kind", required=True, metavar="MODEL")

    k = VAEConfig.OPTIONS
    p = _trainer(train, "vae", "the VAE benchmark (Bernoulli or categorical latents)", cmd_train_vae, VAEConfig,
                 "training steps (default: the protocol's: 1,000,000; reinmax: 96,000, 160 epochs; with --resume, the "
                 "checkpoint's own target)")
    for action in p._actions:
        if action.dest in ("batch_size", "lr"):
            action.help += " (default: the protocol's)"
    p.add_argument("--protocol", type=k["protocol"], default="disarm", metavar="{" + ",".join(PROTOCOLS) + "}",
                   help="published set-up whose defaults fill the flags left out (disarm: linear, batch 50, "
                        "Adam 1e-4, prior SGD 1e-2; rodeo: nonlinear, batch 100, Adam 1e-3, prior fixed; reinmax: "
                        "30 x 10-class latents, 784-512-256 ReLU, batch 100, 160 epochs, the script's RAdam lr and "
                        "temperature, exact KL)")
    p.add_argument("--model", type=k["model"], default=None, metavar="{" + ",".join(MODELS) + "}",
                   help="default: the protocol's")
    p.add_argument("--estimator", type=k["estimator"], default="disarm")
    p.add_argument("--prior-lr", type=k["prior_lr"], default=None, help="SGD's, for the prior logits (0: fixed prior)")
    p.add_argument("--signal", type=k["signal"], default=None, metavar="{" + ",".join(SIGNALS) + "}",
                   help="what the estimator sees: the per-example ELBO term or -log p(x|b) + exact KL "
                        "(default: the protocol's; elbo, reinmax: analytic_kl)")
    p.add_argument("--temperature", type=k["temperature"], default=None,
                   help="the estimator's temperature (default: the reinmax protocol's, else the estimator's)")
    p.add_argument("--clock", type=k["clock"], default="wall", metavar="{" + ",".join(CLOCKS) + "}",
                   help="what --max-seconds and the seconds column measure: wall time or the training thread's "
                        "CPU time (a budget other processes cannot eat into)")
    p.add_argument("--samples", type=k["samples"], default=None,
                   help="samples (antithetic pairs) per estimate; default: the estimator's minimum")
    p.add_argument("--device", type=k["device"], default="cpu")
    p.add_argument("--variance-every", type=k["variance_every"], default=10,
                   help="steps between encoder-gradient-variance updates")
    p.add_argument("--eval-at", type=k["eval_at"], nargs="*", default=[], help="steps at which to evaluate the test bounds too")
    p.add_argument("--max-seconds", type=k["max_seconds"], default=0.0, help="stop once training has taken this long (0: never)")
    p.add_argument("--test-samples", type=k["test_samples"], default=100, help="samples of the importance-weighted test bound")
    p.add_argument("--test-examples", type=k["test_examples"], default=0, help="test examples to evaluate (0: all)")
    p.add_argument("--no-train-bound", dest="train_bound", action="store_false",
                   help="skip the summary's bound on as many training images (one evaluation less)")
    p.add_argument("--categories", type=k["categories"], default=None,
                   help="0: Bernoulli latents; K >= 2: categorical latents of K classes (default: the protocol's; "
                        "0, reinmax: 10)")
    p.add_argument("--latents", type=k["latent"], default=None,
                   help="latent variables (default 200 Bernoulli, 20 categorical; reinmax: 30)")

    k = GatingConfig.OPTIONS
    p = _trainer(train, "gating", "conditional computation: stochastic gates on MNIST", cmd_train_gating, GatingConfig,
                 "stop after this many SGD steps, mid-epoch if need be (validated there; default: no limit, the "
                 "epochs decide; with --resume, the checkpoint's)")
    p.add_argument("--gater", type=k["gater"], default="straight_through", metavar="GATER",
                   help=", ".join(GATERS) + " (reinforce_optimal: the unbiased gater)")
    p.add_argument("--epochs", type=k["epochs"], default=None,
                   help="epochs over the training split, early stopping on validation (default: 100; with --resume, "
                        "the checkpoint's)")
    p.add_argument("--patience", type=k["patience"], default=20, help="epochs without a better validation error before stopping")
    p.add_argument("--target", type=k["target"], default=0.1, help="fraction of gates open")
    p.add_argument("--sparsity-weight", type=k["sparsity_weight"], default=0.1,
                   help="weight of the KL penalty (sigmoid family) / start of the adaptive L1 (rectifiers, x1e-2)")
    p.add_argument("--rate-control", action="store_true", help="also the paper's section 2 per-unit firing-rate control")
    p.add_argument("--expert", type=k["expert"], default="linear", metavar="{" + ",".join(EXPERTS) + "}",
                   help="the expert path's units: linear (the paper notes) or relu (a deviation, to test whether the "
                        "paper's experts were non-linear)")
    p.add_argument("--max-seconds", type=k["max_seconds"], default=0.0, help="stop after the epoch that passes this training time")
    p.add_argument("--device", type=k["device"], default="cpu")

    k = RBMConfig.OPTIONS
    p = _trainer(train, "rbm", "a restricted Boltzmann machine by CD-k or PCD (reward correlation, §4.2)", cmd_train_rbm,
                 RBMConfig)
    p.add_argument("--hidden", type=k["hidden"], default=100)
    p.add_argument("--method", type=k["method"], default="pcd", metavar="{cd,pcd}")
    p.add_argument("--k", type=k["k"], default=1, help="Gibbs steps per update")

    k = HashingConfig.OPTIONS
    p = _trainer(train, "hashing", "semantic hashing: binary codes from a stochastic code layer", cmd_train_hashing,
                 HashingConfig)
    p.add_argument("--estimator", type=k["estimator"], default="straight_through",
                   help="any layer estimator (pathwise or reinforce*)")
    p.add_argument("--bits", type=k["bits"], default=32)

    k = BanditConfig.OPTIONS
    p = _trainer(train, "bandit", "the 6-bit multiplexer learned from a (delayed) broadcast reward", cmd_train_bandit,
                 BanditConfig)
    p.add_argument("--estimator", type=k["estimator"], default="reinforce_optimal",
                   help="reinforce, reinforce_ma or reinforce_optimal")
    p.add_argument("--delay", type=k["delay"], default=0, help="steps between a decision and its reward")
    p.add_argument("--hidden", type=k["hidden"], default=32)

    p = sub.add_parser("estimators", help="list the registered estimators")
    p.set_defaults(run=cmd_estimators, parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``stochgrad`` command; returns the exit status. An output that cannot be written (disk
    full, a read-only folder) or a failed allocation is one line, not a traceback."""
    from .files import OutputError
    from .studies.training import CheckpointError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:   # the (sub-)command's own parser says it, pointing to its own --help
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "threads", None) is not None:
        from .runinfo import set_threads

        set_threads(args.threads)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("\nstochgrad: interrupted" + (f"; {args.out}/checkpoint.pt holds the last checkpoint: --resume "
                                            "continues from it" if getattr(args, "model_kind", None) else ""),
              file=sys.stderr)
        return 130
    except (OutputError, CheckpointError) as err:
        _fail(str(err))
    except (MemoryError, torch.OutOfMemoryError) as err:
        _fail(f"out of memory ({str(err).strip().splitlines()[0] if str(err).strip() else 'MemoryError'}): "
              "lower the sizes (--batch-size, --hidden, --latents, --samples, ...)")
    except RuntimeError as err:
        if "allocate" not in str(err):
            raise
        _fail(f"out of memory ({str(err).strip().splitlines()[0]}): lower the sizes (--batch-size, --hidden, "
              "--latents, --samples, ...)")


if __name__ == "__main__":
    sys.exit(main())
