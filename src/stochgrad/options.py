"""The settings of the commands and studies: one check per kind of value, shared by the command line and
the configurations that Python callers build.

A [`Kind`][stochgrad.options.Kind] checks a value in two ways, with the same words:

- ``kind.check(value, name)``: a Python value; ``TypeError`` / [`OptionError`][stochgrad.options.OptionError]
  (a ``ValueError``) naming it: ``steps must be an integer >= 1, got -5``.
- ``kind(text)``: the ``type=`` of an ``argparse`` flag, which parses the text first:
  ``argument --steps: must be an integer >= 1, got -5``.

The kinds: counts (``POSITIVE``, ``NON_NEGATIVE``, [`integer`][stochgrad.options.integer]: at most
[`MAX_COUNT`][stochgrad.options.MAX_COUNT], so that no size or count reaches torch as an overflow), ``SEED``,
``THREADS``, numbers (``POSITIVE_FLOAT``, ``NON_NEGATIVE_FLOAT``, ``FRACTION``), ``DEVICE`` (which says why a GPU
is not usable), ``FOLDER``, and names ([`choice`][stochgrad.options.choice]: a near miss gets "did you mean"). It imports nothing of
stochgrad's: every floor of the package may use it.

A study's configuration (a dataclass deriving from [`Options`][stochgrad.options.Options]) declares the kind of
each field in ``OPTIONS``; ``Options.validate`` checks them all (``None`` stands for "the default" where a field
allows it), and runs when the configuration is built and again when a ``train_*`` function starts, before
anything is written. The command line gives each flag the kind of the field it fills (a test checks that
they agree), so a bad value reads the same from either side.
"""
from __future__ import annotations

import argparse
import difflib
import math
import os


class OptionError(ValueError):
    """A setting that is out of range: ``name`` (the field) and ``problem`` (``must be …, got …``)."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"{name} {problem}")
        self.name, self.problem = name, problem


class OptionTypeError(OptionError, TypeError):
    """A setting of the wrong type (``True`` for a count, a string for a number): a ``TypeError``, and an
    [`OptionError`][stochgrad.options.OptionError] like every other bad setting."""


class Kind:
    """A kind of setting: ``words`` (``"an integer >= 1"``), the Python ``types`` it takes, ``parse`` (text →
    value, raising ``ValueError``), ``accept`` (value → bool) and optionally ``explain`` (a value not accepted →
    the problem in words, when more can be said than ``must be {words}``)."""

    def __init__(self, words: str, types: tuple, parse, accept, explain=None):
        self.words, self.types, self.parse, self.accept, self.explain = words, types, parse, accept, explain
        self.__doc__ = f"A setting that must be {words}."

    def wrong_type(self, value) -> bool:
        """Whether ``value`` is not of this kind's types (``True``/``False`` count as numbers only for a flag)."""
        return (isinstance(value, bool) and bool not in self.types) or not isinstance(value, self.types)

    def problem(self, value) -> str | None:
        """``"must be …, got …"`` if ``value`` is not of this kind, else ``None``."""
        if self.wrong_type(value):
            return f"must be {self.words}, got {value!r}"
        if not self.accept(value):
            return (self.explain(value) if self.explain else None) or f"must be {self.words}, got {value!r}"
        return None

    def check(self, value, name: str):
        """``value`` if it is of this kind; else [`OptionTypeError`][stochgrad.options.OptionTypeError] (wrong type:
        a ``TypeError``) or [`OptionError`][stochgrad.options.OptionError] (a ``ValueError``) naming ``name``."""
        problem = self.problem(value)
        if problem is None:
            return value
        raise (OptionTypeError if self.wrong_type(value) else OptionError)(name, problem)

    def __call__(self, text: str):
        """``argparse``'s ``type=``: parses the flag's text and checks it (``ArgumentTypeError`` otherwise)."""
        try:
            value = self.parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.words}, got {text!r}") from None
        if not self.accept(value):
            raise argparse.ArgumentTypeError((self.explain(value) if self.explain else None)
                                             or f"must be {self.words}, got {text}")
        return value

    def __repr__(self) -> str:
        return f"Kind({self.words!r})"


#: The largest count a setting may take (sizes, steps, samples): 2**31 − 1. Beyond it torch's sizes overflow
#: or no memory holds the tensors; a larger value is a clear error, not a traceback.
MAX_COUNT = 2 ** 31 - 1


def integer(minimum: int, maximum: int = MAX_COUNT) -> Kind:
    """An ``int`` in ``[minimum, maximum]`` (words: ``an integer >= minimum``; a value past ``maximum`` says so)."""
    return Kind(f"an integer >= {minimum}", (int,), int, lambda v: minimum <= v <= maximum,
                lambda v: f"must be at most {maximum}, got {v}" if v > maximum else None)


def _cuda_reason(text: str) -> str | None:
    """Why ``text`` (a cuda device) cannot be used here, in words, or ``None`` if it can."""
    import torch

    if torch.version.cuda is None:
        return (f"must be cpu here, got {text}: this PyTorch ({torch.__version__}) is a CPU-only build; install a "
                "CUDA build of PyTorch (the README's GPU set-up) to use a GPU")
    if not torch.cuda.is_available():
        return f"must be cpu here, got {text}: PyTorch was built with CUDA {torch.version.cuda} but sees no GPU"
    device = torch.device(text)
    if device.index is not None and device.index >= torch.cuda.device_count():
        return f"must be cpu or cuda:0 … cuda:{torch.cuda.device_count() - 1} here, got {text}"
    return None


def _device_ok(text) -> bool:
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        return False
    if device.type == "cuda":
        return _cuda_reason(text) is None
    return device.type == "cpu"


def _device_problem(text) -> str | None:
    import torch

    try:
        if torch.device(text).type == "cuda":
            return _cuda_reason(text)
    except (RuntimeError, ValueError, TypeError):
        pass
    return None


POSITIVE, NON_NEGATIVE = integer(1), integer(0)
SEED = integer(0, 2 ** 32 - 1)
THREADS = integer(1, 1024)
#: The largest magnitude a number setting may take: float32's largest finite value. Settings enter state and
#: arithmetic in the logits' dtype, so a value beyond it would be inf there (``ridge=1e300``, ``lr=1e300``).
MAX_NUMBER = 3.4028234663852886e38


def _finite(v) -> bool:
    return math.isfinite(v) and abs(v) <= MAX_NUMBER


POSITIVE_FLOAT = Kind("a finite number > 0", (int, float), float, lambda v: _finite(v) and v > 0)
NON_NEGATIVE_FLOAT = Kind("a finite number >= 0", (int, float), float, lambda v: _finite(v) and v >= 0)
FINITE = Kind("a finite number", (int, float), float, _finite)
FRACTION = Kind("a number in (0, 1)", (int, float), float, lambda v: 0 < v < 1)
DECAY = Kind("a number in [0, 1)", (int, float), float, lambda v: 0 <= v < 1)   # a moving average's decay
UNIT_INTERVAL = Kind("a number in [0, 1]", (int, float), float, lambda v: 0 <= v <= 1)
SHARE = Kind("a number in (0, 1]", (int, float), float, lambda v: 0 < v <= 1)   # a share of a whole, not none of it
def _flag(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(text)
    return text.lower() == "true"


FLAG = Kind("True or False", (bool,), _flag, lambda v: True)
WIDTH = integer(1, 2 ** 16)   # a network's hidden units: more would allocate until the process is killed
DEVICE = Kind("cpu, or cuda / cuda:N of a GPU this machine has", (str,), str, _device_ok, _device_problem)
FOLDER = Kind("a folder (it may not exist yet), not a file", (str, os.PathLike), str,
              lambda v: not (os.path.exists(v) and not os.path.isdir(v)))


def suggestion(name, names) -> str:
    """``" (did you mean 'disarm'?)"`` when ``name`` is a near miss of one of ``names`` (a different case, a
    letter too many or too few: `difflib.get_close_matches`), else ``""``."""
    if not isinstance(name, str):
        return ""
    names = list(names)
    lowered = {n.lower(): n for n in names}
    if name.lower() in lowered:
        return f" (did you mean {lowered[name.lower()]!r}?)"
    close = difflib.get_close_matches(name.lower().replace("-", "_"), list(lowered), n=1, cutoff=0.75)
    return f" (did you mean {lowered[close[0]]!r}?)" if close else ""


def choice(*values: str, words: str = "") -> Kind:
    """One of ``values`` (strings); a near miss gets "did you mean" ([`suggestion`][stochgrad.options.suggestion]). ``words`` names the
    values (``"one of the gaters"``; then a wrong value's message lists them)."""
    listed = ", ".join(values)
    said = words or f"one of {listed}"
    return Kind(said, (str,), str, lambda v: v in values,
                lambda v: f"must be {said}, got {v!r}{suggestion(v, values)}" + (f"; valid: {listed}" if words else ""))


def unknown_names(given, known) -> str | None:
    """``"has unknown estimator name 'x' (did you mean 'y'?); known: a, b, …"`` for the names of ``given`` that
    are not in ``known``, or ``None`` when all are."""
    unknown = [n for n in given if n not in known]
    if not unknown:
        return None
    hints = "".join(suggestion(n, known) for n in unknown[:1])
    return (f"has unknown estimator name{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}{hints}; "
            f"known: {', '.join(known)}")


class Options:
    """Mixin of the studies' configuration dataclasses: ``OPTIONS = {field: Kind}`` (a class attribute)
    names the kind of each checked field; ``None`` passes for a field listed in ``DEFAULTED`` (filled in
    later, e.g. from a protocol). A field holding a tuple (``eval_at``) is checked element by element. A derived
    configuration's ``OPTIONS`` and ``DEFAULTED`` add to its bases'."""

    OPTIONS: dict = {}
    DEFAULTED: tuple = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        options, defaulted = {}, ()
        for base in reversed(cls.__mro__[1:]):
            options.update(getattr(base, "OPTIONS", {}))
            defaulted += tuple(getattr(base, "DEFAULTED", ()))
        cls.OPTIONS = {**options, **cls.__dict__.get("OPTIONS", {})}
        cls.DEFAULTED = tuple(dict.fromkeys(defaulted + tuple(cls.__dict__.get("DEFAULTED", ()))))

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Checks every field of ``OPTIONS``, then [`check`][stochgrad.options.Options.check] (settings that depend on each other)."""
        for name, kind in self.OPTIONS.items():
            value = getattr(self, name)
            if value is None and name in self.DEFAULTED:
                continue
            for item in value if isinstance(value, (tuple, list)) else (value,):
                kind.check(item, name)
        self.check()

    def check(self) -> None:
        """Settings that depend on each other (raise [`OptionError`][stochgrad.options.OptionError]); none by default."""
