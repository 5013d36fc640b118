import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def gen():
    """A fresh generator with a fixed seed: every statistical test is deterministic."""
    return torch.Generator().manual_seed(1234)
