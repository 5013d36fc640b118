import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

torch.set_num_threads(2)


@pytest.fixture
def gen():
    """A fresh generator with a fixed seed: every statistical test is deterministic."""
    return torch.Generator().manual_seed(1234)


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (its sibling modules importable while it loads)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module
