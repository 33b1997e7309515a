"""Offline data for ``references/paper/train.py``: IDX files (MNIST, Fashion-MNIST), CIFAR
pickles and scikit-learn's bundled digits, all read with the standard library and numpy.

Every loader returns a :class:`Split` of float32 images ``(N, C, H, W)`` scaled to [0, 1] and
int64 labels ``(N,)``; the official test set is the validation set, as in the authors' notebooks.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import struct

import numpy as np
import torch

# IDX type byte -> numpy dtype (IDX data is big-endian)
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100")
# Debian's dataset-fashion-mnist package installs the IDX files here.
DEFAULT_DIRS = {"fashion-mnist": ("/usr/share/datasets/fashion-mnist",)}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclasses.dataclass
class Split:
    """``x``: float32 ``(N, C, H, W)`` in [0, 1]; ``y``: int64 ``(N,)``."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, n: int | None, seed: int = 0) -> "Split":
        """A fixed random subset of ``n`` examples (all of them when ``n`` is None or too big)."""
        if n is None or n >= len(self):
            return self
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return Split(self.x[index], self.y[index])


@dataclasses.dataclass
class Data:
    name: str
    train: Split
    val: Split
    num_classes: int
    source: str  # where it was read from, recorded in the results


def read_idx(path: str) -> np.ndarray:
    """Reads one IDX file (optionally gzip-compressed) into an array of its declared shape."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (expected magic 0x0000TTNN, got {data[:4].hex()!r})")
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type byte 0x{type_code:02x}, expected one of "
                         f"{', '.join(f'0x{c:02x}' for c in IDX_DTYPES)}")
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"{path}: header declares shape {shape} ({expected} bytes of data), "
                         f"found {len(data) - header} bytes")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(directory: str, stem: str) -> str:
    for name in (stem, stem + ".gz"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"data_dir {directory!r} has neither {stem} nor {stem}.gz")


def _images(array: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> float32 (N, C, H, W) in [0, 1]."""
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4:
        array = array.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"expected images of shape (N, H, W) or (N, H, W, C), got {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32) / 255.0)


def load_idx_dir(name: str, directory: str) -> Data:
    splits = {}
    for split, (images, labels) in IDX_FILES.items():
        x = read_idx(_find(directory, images))
        y = read_idx(_find(directory, labels))
        if len(x) != len(y):
            raise ValueError(f"{directory}: {len(x)} {split} images but {len(y)} labels")
        splits[split] = Split(_images(x), torch.from_numpy(y.astype(np.int64)))
    return Data(name, splits["train"], splits["val"], 10, os.path.abspath(directory))


def load_cifar_dir(name: str, directory: str) -> Data:
    """CIFAR-10 (``data_batch_1..5``, ``test_batch``) or CIFAR-100 (``train``, ``test``) python pickles."""
    if name == "cifar10":
        parts = {"train": [f"data_batch_{i}" for i in range(1, 6)], "val": ["test_batch"]}
        key, classes = b"labels", 10
    else:
        parts = {"train": ["train"], "val": ["test"]}
        key, classes = b"fine_labels", 100
    splits = {}
    for split, files in parts.items():
        xs, ys = [], []
        for file in files:
            path = os.path.join(directory, file)
            if not os.path.exists(path):
                raise FileNotFoundError(f"data_dir {directory!r} has no {file} (the CIFAR python version)")
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[key], dtype=np.int64))
        x = np.concatenate(xs).transpose(0, 2, 3, 1)
        splits[split] = Split(_images(x), torch.from_numpy(np.concatenate(ys)))
    return Data(name, splits["train"], splits["val"], classes, os.path.abspath(directory))


def load_digits() -> Data:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16), kept at their native 8x8
    size and scaled to [0, 1]; a fixed 80/20 split (1438 train, 359 validation)."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as error:
        raise RuntimeError("dataset 'digits' needs scikit-learn (pip install scikit-learn), "
                           "or pass --dataset fashion-mnist/mnist/cifar10/cifar100 with --data-dir") from error
    bunch = sk_load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]
    y = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_train = int(round(0.8 * len(y)))
    train, val = order[:n_train], order[n_train:]
    return Data("digits", Split(x[train], y[train]), Split(x[val], y[val]), 10, "sklearn.datasets.load_digits")


def load(name: str, data_dir: str | None = None) -> Data:
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")
    if name == "digits":
        return load_digits()
    if data_dir is None:
        found = [d for d in DEFAULT_DIRS.get(name, ()) if os.path.isdir(d)]
        if not found:
            hint = " (apt-get install dataset-fashion-mnist installs it)" if name == "fashion-mnist" else ""
            raise FileNotFoundError(f"dataset {name!r} needs --data-dir with its files{hint}")
        data_dir = found[0]
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"data_dir {data_dir!r} is not a directory")
    if name in ("cifar10", "cifar100"):
        return load_cifar_dir(name, data_dir)
    return load_idx_dir(name, data_dir)
