"""Datasets for architecture search: images as float tensors [N, C, H, W], integer labels.

A search trains weights on `train` and alphas on `val` (disjoint halves of the training
data, as in DARTS); a derived network is then trained on train + val and scored on `test`.

- `digits`: scikit-learn's bundled 8x8 digits (1,797 images, 10 classes; offline). By seed,
  20% become `test` and the rest is split in half into `train` and `val`.
- a path to a `.npz` file with arrays `x_train`, `y_train`, `x_test`, `y_test`: x of shape
  [N, H, W] (one channel) or [N, H, W, C] (channels last, as CIFAR-10 is usually stored),
  uint8 in 0..255 or float; y integer class labels 0..K-1 of shape [N]. By seed, x_train is
  split in half into `train` and `val`.
Pixels are standardised per channel with the mean and deviation of `train`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from rung.errors import InputError

TEST_FRACTION = 0.2  # of the digits; user datasets bring their own test split
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass
class Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int

    @property
    def channels(self) -> int:
        return self.x_train.shape[1]

    def subset(self, train: int, val: int | None = None, test: int | None = None) -> "Data":
        """The first samples of each split (small, fast runs)."""
        val = train if val is None else val
        test = val if test is None else test
        return Data(self.x_train[:train], self.y_train[:train], self.x_val[:val], self.y_val[:val],
                    self.x_test[:test], self.y_test[:test], self.classes)

    def to(self, device) -> "Data":
        return Data(*(t.to(device) for t in (self.x_train, self.y_train, self.x_val, self.y_val,
                                             self.x_test, self.y_test)), self.classes)


def load_data(dataset: str = "digits", seed: int = 0) -> Data:
    """`digits` or a local .npz path (see the module docstring)."""
    if dataset == "digits":
        return digits(seed)
    path = dataset[len("file://"):] if dataset.startswith("file://") else dataset
    if "://" in path:
        raise InputError("dataset", f"{dataset!r} is a URI; rung.nas reads local files",
                         "fetch it to a local .npz path first, or use digits")
    if not path.endswith(".npz") or not os.path.isfile(path):
        raise InputError("dataset", f"{dataset!r} is neither digits nor an existing .npz file",
                         f"give digits or the path of an .npz with {', '.join(NPZ_KEYS)}")
    return from_npz(path, seed)


def digits(seed: int = 0) -> Data:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None, :, :] / 16.0
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(TEST_FRACTION * len(x)))
    test, rest = order[:n_test], order[n_test:]
    half = len(rest) // 2
    return _standardised(x[rest[:half]], y[rest[:half]], x[rest[half:]], y[rest[half:]], x[test], y[test])


def from_npz(path: str, seed: int = 0) -> Data:
    with np.load(path) as archive:
        missing = [k for k in NPZ_KEYS if k not in archive]
        if missing:
            raise InputError("dataset", f"{path} lacks {', '.join(missing)}", f"store {', '.join(NPZ_KEYS)}")
        arrays = {k: archive[k] for k in NPZ_KEYS}
    x_train, x_test = (_channels_first(arrays[k], k) for k in ("x_train", "x_test"))
    y_train, y_test = (_labels(arrays[k], k, len(x)) for k, x in (("y_train", x_train), ("y_test", x_test)))
    if x_train.shape[1:] != x_test.shape[1:]:
        raise InputError("dataset", f"x_train images are {x_train.shape[1:]}, x_test {x_test.shape[1:]}",
                         "store both at one shape")
    if len(x_train) < 4:
        raise InputError("dataset", "x_train has fewer than 4 images", "store more")
    order = np.random.default_rng(seed).permutation(len(x_train))
    half = len(order) // 2
    train, val = order[:half], order[half:]
    return _standardised(x_train[train], y_train[train], x_train[val], y_train[val], x_test, y_test)


def _channels_first(x: np.ndarray, key: str) -> np.ndarray:
    if x.ndim not in (3, 4):
        raise InputError("dataset", f"{key} has shape {x.shape}", "store [N, H, W] or [N, H, W, C]")
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    x = x.astype(np.float32) / scale
    return x[:, None, :, :] if x.ndim == 3 else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _labels(y: np.ndarray, key: str, n: int) -> np.ndarray:
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or (n and y.min() < 0):
        raise InputError("dataset", f"{key} must be {n} integer labels >= 0, is {y.dtype} {y.shape}")
    return y.astype(np.int64)


def _standardised(x_train, y_train, x_val, y_val, x_test, y_test) -> Data:
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    xs = [torch.from_numpy(np.ascontiguousarray((x - mean) / std)) for x in (x_train, x_val, x_test)]
    ys = [torch.from_numpy(y) for y in (y_train, y_val, y_test)]
    classes = int(max(int(y.max()) for y in (y_train, y_val, y_test) if len(y)) + 1)
    return Data(xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], classes)
