"""The feature networks Fréchet distances are measured in — classifiers trained on the run's own
training split (an MLP, and a CNN for images) — and FID with user-supplied Inception weights."""
from __future__ import annotations

import os

import torch

from ..config import FEATURE_DIM
from ..errors import UserError


class _Classifier(torch.nn.Module):
    """The feature network of FD: an MLP on the flat pixels; ``body`` is its penultimate layer
    (:data:`~hebm.config.FEATURE_DIM` wide)."""

    def __init__(self, d, n_classes, feat=FEATURE_DIM):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(d, 128), torch.nn.GELU(), torch.nn.Linear(128, feat),
                                        torch.nn.GELU())
        self.head = torch.nn.Linear(feat, n_classes)

    def forward(self, x):
        return self.head(self.body(x))


class _ConvBody(torch.nn.Module):
    """A second, convolutional feature network for images (any size ≥ 4×4): two 3×3 convolutions
    with 2×2 pooling, global 2×2 average pooling, a Linear to :data:`~hebm.config.FEATURE_DIM` features."""

    def __init__(self, shape, feat=FEATURE_DIM):
        super().__init__()
        C = int(shape[0])
        self.shape = tuple(int(v) for v in shape)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(C, 16, 3, 1, 1), torch.nn.GELU(), torch.nn.MaxPool2d(2),
                                       torch.nn.Conv2d(16, 32, 3, 1, 1), torch.nn.GELU(),
                                       torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(),
                                       torch.nn.Linear(128, feat), torch.nn.GELU())

    def forward(self, x):
        return self.net(x.reshape(-1, *self.shape))


class _ConvClassifier(torch.nn.Module):
    def __init__(self, shape, n_classes, feat=FEATURE_DIM):
        super().__init__()
        self.body = _ConvBody(shape, feat)
        self.head = torch.nn.Linear(feat, n_classes)

    def forward(self, x):
        return self.head(self.body(x))


def train_classifier(x, y, *, steps: int = 1000, seed: int = 0, shape=None):
    """A classifier of ``y`` from flat images ``x`` (Adam, 1,000 steps of 128): the MLP, or with an
    image ``shape`` the convolutional one."""
    torch.manual_seed(seed)
    clf = _Classifier(x.shape[1], int(y.max()) + 1) if shape is None else _ConvClassifier(shape, int(y.max()) + 1)
    opt = torch.optim.Adam(clf.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (128,), generator=g)
        loss = torch.nn.functional.cross_entropy(clf(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return clf.eval()


def feature_networks(tr, te, *, seed: int = 0) -> dict:
    """The two feature networks FD is measured in, each trained on the training split's labels:
    ``mlp`` (the MLP classifier's penultimate layer) and a second of another architecture —
    ``cnn`` for images, else an MLP of another seed (``mlp2``) — so a ranking can be confirmed in
    features that share no weights.  ``{name: (body, held-out accuracy)}``."""
    nets = {"mlp": train_classifier(tr.x, tr.y, seed=seed)}
    if tr.shape is not None:
        nets["cnn"] = train_classifier(tr.x, tr.y, seed=seed + 1, shape=tr.shape)
    else:
        nets["mlp2"] = train_classifier(tr.x, tr.y, seed=seed + 101)
    out = {}
    with torch.no_grad():
        for k, clf in nets.items():
            out[k] = (clf.body, float((clf(te.x).argmax(1) == te.y).float().mean()))
    return out


def fid_torchmetrics(real01: torch.Tensor, fake01: torch.Tensor, weights: str) -> float:
    """FID with torchmetrics' Inception and user-supplied local weights (optional dependency)."""
    if not os.path.isfile(weights):
        raise UserError(f"--inception-weights {weights!r} does not exist")
    try:  # torch-fidelity itself loads the file with weights_only=False: check it holds only tensors first
        torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means we will not hand the file on
        raise UserError(f"--inception-weights {weights!r} is refused by torch.load(weights_only=True) "
                        f"({type(e).__name__}); it must be a plain state dict of tensors") from None
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        raise UserError("FID needs torchmetrics and torch-fidelity (pip install torchmetrics torch-fidelity); the "
                        "classifier FD needs nothing") from None
    fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=weights)

    def prep(im):
        im = torch.nn.functional.interpolate(im, size=(299, 299), mode="bilinear")
        im = im.expand(-1, 3, -1, -1) if im.shape[1] == 1 else im
        return (im.clamp(0, 1) * 255).to(torch.uint8)

    for j in range(0, len(real01), 64):
        fid.update(prep(real01[j: j + 64]), real=True)
    for j in range(0, len(fake01), 64):
        fid.update(prep(fake01[j: j + 64]), real=False)
    return float(fid.compute())


__all__ = ["feature_networks", "fid_torchmetrics", "train_classifier"]
