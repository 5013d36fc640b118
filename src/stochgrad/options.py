"""The settings of the commands and studies: one check per kind of value, shared by the command line and
the configurations that Python callers build.

A :class:`Kind` (:data:`POSITIVE`, :data:`NON_NEGATIVE`, :func:`integer`, :data:`POSITIVE_FLOAT`,
:data:`NON_NEGATIVE_FLOAT`, :data:`FRACTION`, :data:`DEVICE`, :data:`FOLDER`, :data:`SEED`) checks a value in
two ways, with the same words:

- ``kind.check(value, name)``: a Python value; ``TypeError`` / :class:`OptionError` (a ``ValueError``)
  naming it: ``steps must be an integer >= 1, got -5``.
- ``kind(text)``: the ``type=`` of an ``argparse`` flag, which parses the text first:
  ``argument --steps: must be an integer >= 1, got -5``.

A study's configuration (a dataclass deriving from :class:`Options`) declares the kind of each field in
``OPTIONS``; :meth:`Options.validate` checks them all (``None`` stands for "the default" where a field
allows it), and runs when the configuration is built and again when a ``train_*`` function starts, before
anything is written. The command line gives each flag the kind of the field it fills (a test checks that
they agree), so a bad value reads the same from either side.
"""
from __future__ import annotations

import argparse
import math
import os


class OptionError(ValueError):
    """A setting that is out of range: ``name`` (the field) and ``problem`` (``must be …, got …``)."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"{name} {problem}")
        self.name, self.problem = name, problem


class Kind:
    """A kind of setting: ``words`` (``"an integer >= 1"``), the Python ``types`` it takes, ``parse`` (text →
    value, raising ``ValueError``) and ``accept`` (value → bool)."""

    def __init__(self, words: str, types: tuple, parse, accept):
        self.words, self.types, self.parse, self.accept = words, types, parse, accept
        self.__doc__ = f"A setting that must be {words}."

    def problem(self, value) -> str | None:
        """``"must be …, got …"`` if ``value`` is not of this kind, else ``None``."""
        if isinstance(value, bool) or not isinstance(value, self.types) or not self.accept(value):
            return f"must be {self.words}, got {value!r}"
        return None

    def check(self, value, name: str):
        """``value`` if it is of this kind; else ``TypeError`` (wrong type) or :class:`OptionError` naming ``name``."""
        problem = self.problem(value)
        if problem is None:
            return value
        if isinstance(value, bool) or not isinstance(value, self.types):
            raise TypeError(f"{name} {problem}")
        raise OptionError(name, problem)

    def __call__(self, text: str):
        """``argparse``'s ``type=``: parses the flag's text and checks it (``ArgumentTypeError`` otherwise)."""
        try:
            value = self.parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.words}, got {text!r}") from None
        if not self.accept(value):
            raise argparse.ArgumentTypeError(f"must be {self.words}, got {text}")
        return value

    def __repr__(self) -> str:
        return f"Kind({self.words!r})"


def integer(minimum: int) -> Kind:
    """An ``int >= minimum``."""
    return Kind(f"an integer >= {minimum}", (int,), int, lambda v: v >= minimum)


def _device_ok(text) -> bool:
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        return False
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index is None or device.index < torch.cuda.device_count())
    return device.type == "cpu"


POSITIVE, NON_NEGATIVE = integer(1), integer(0)
SEED = Kind("an integer", (int,), int, lambda v: True)
POSITIVE_FLOAT = Kind("a finite number > 0", (int, float), float, lambda v: math.isfinite(v) and v > 0)
NON_NEGATIVE_FLOAT = Kind("a finite number >= 0", (int, float), float, lambda v: math.isfinite(v) and v >= 0)
FRACTION = Kind("a number in (0, 1)", (int, float), float, lambda v: 0 < v < 1)
DEVICE = Kind("cpu, or cuda / cuda:N of a GPU this machine has", (str,), str, _device_ok)
FOLDER = Kind("a folder (it may not exist yet), not a file", (str, os.PathLike), str,
              lambda v: not (os.path.exists(v) and not os.path.isdir(v)))


class Options:
    """Mixin of the studies' configuration dataclasses: ``OPTIONS = {field: Kind}`` (a class attribute)
    names the kind of each checked field; ``None`` passes for a field listed in ``DEFAULTED`` (filled in
    later, e.g. from a protocol). A field holding a tuple (``eval_at``) is checked element by element."""

    OPTIONS: dict = {}
    DEFAULTED: tuple = ()

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Checks every field of ``OPTIONS``, then :meth:`check` (settings that depend on each other)."""
        for name, kind in self.OPTIONS.items():
            value = getattr(self, name)
            if value is None and name in self.DEFAULTED:
                continue
            for item in value if isinstance(value, (tuple, list)) else (value,):
                kind.check(item, name)
        self.check()

    def check(self) -> None:
        """Settings that depend on each other (raise :class:`OptionError`); none by default."""
