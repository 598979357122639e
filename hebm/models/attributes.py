"""Attributes of the embedded images, for controllable synthesis (docs/controllable.md).

Every attribute is a discrete label per image, computed from the data set's own labels or from
the image itself — nothing is annotated by hand, so each definition is a formula:

* ``digit`` — the data set's class label (10 values).
* ``thickness`` — stroke thickness, binarised: 1 when the image's **ink mass** (the sum of its
  pixel intensities mapped to [0, 1]) is above the median ink mass of its own digit class, else
  0.  Per-class medians, because a 1 has far less ink than an 8 at any thickness.
* ``slant`` — the sign of the image's **second-moment slant**: with pixel coordinates (r down,
  c right), intensities w ≥ 0 and the intensity-weighted centroid (r̄, c̄),
  ``slant = −Σ w (c − c̄)(r − r̄) / Σ w (r − r̄)²`` — the horizontal shift of the stroke per row
  upwards, positive when the top of the glyph leans right (a "/"); the label is 1 for
  ``slant > 0``, else 0.

``ATTRIBUTES`` is the one table of names, value counts and definitions; :func:`labels` computes
them for a data set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch


def ink_mass(x: torch.Tensor) -> torch.Tensor:
    """``[N]``: the sum of each flat image's intensities in [0, 1] (data are in [-1, 1])."""
    return ((x.double().clamp(-1, 1) + 1) / 2).sum(1)


def second_moment_slant(x: torch.Tensor, shape) -> torch.Tensor:
    """``[N]``: ``−μ₁₁ / μ₀₂`` of each image (module docstring), 0 for an empty image."""
    C, H, W = (int(v) for v in shape)
    w = ((x.double().clamp(-1, 1) + 1) / 2).reshape(-1, C, H, W).sum(1)  # [N, H, W]
    r = torch.arange(H, dtype=torch.float64).reshape(1, H, 1)
    c = torch.arange(W, dtype=torch.float64).reshape(1, 1, W)
    m = w.sum((1, 2)).clamp_min(1e-12)
    rb = (w * r).sum((1, 2)) / m
    cb = (w * c).sum((1, 2)) / m
    dr, dc = r - rb.reshape(-1, 1, 1), c - cb.reshape(-1, 1, 1)
    mu11 = (w * dc * dr).sum((1, 2)) / m
    mu02 = (w * dr * dr).sum((1, 2)) / m
    return torch.where(mu02 > 1e-12, -mu11 / mu02.clamp_min(1e-12), torch.zeros_like(mu02))


def class_ink_medians(x: torch.Tensor, y: torch.Tensor) -> dict:
    """``{class: median ink mass}`` over the images of each class."""
    mass = ink_mass(x)
    return {int(c): float(torch.quantile(mass[y == c], 0.5)) for c in torch.unique(y)}


def thickness_given_medians(x: torch.Tensor, y: torch.Tensor, medians: dict) -> torch.Tensor:
    """1 where an image's ink mass is above ``medians[class]``, else 0 (``y`` the classes)."""
    mass = ink_mass(x)
    med = torch.tensor([medians[int(c)] for c in y], dtype=mass.dtype)
    return (mass > med).long()


def thickness_labels(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 where the ink mass is above its class's median ink mass, else 0."""
    return thickness_given_medians(x, y, class_ink_medians(x, y))


@dataclass(frozen=True)
class Attribute:
    name: str
    n_values: int
    definition: str
    compute: Callable  # (x [N, D], y [N], shape) -> [N] int64 in [0, n_values)


ATTRIBUTES = {
    "digit": Attribute("digit", 10, "the data set's class label", lambda x, y, shape: y.long().clone()),
    "thickness": Attribute("thickness", 2, "ink mass above (1) or below (0) its class's median",
                           lambda x, y, shape: thickness_labels(x, y)),
    "slant": Attribute("slant", 2, "sign of the second-moment slant: 1 leans right (/), 0 left (\\)",
                       lambda x, y, shape: (second_moment_slant(x, shape) > 0).long()),
}


def check_names(names: Sequence[str], what: str = "--attributes") -> list:
    """The names, checked against :data:`ATTRIBUTES` (an unknown one is a ValueError naming it)."""
    names = [str(n).strip() for n in names]
    bad = [n for n in names if n not in ATTRIBUTES]
    if bad or not names:
        raise ValueError(f"{what}: unknown attribute {', '.join(map(repr, bad)) or '(none given)'}; the attributes "
                         f"are {', '.join(ATTRIBUTES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{what}: an attribute is named twice ({', '.join(names)})")
    return names


def labels(data, names: Sequence[str]) -> torch.Tensor:
    """``[N, len(names)]`` int64: the attributes ``names`` of every image of ``data``
    (a :class:`hebm.data.VectorData` with labels and an image shape)."""
    names = check_names(names)
    if data.shape is None:
        raise ValueError(f"--attributes are defined on images; {data.name} has none")
    if (data.y < 0).any():
        raise ValueError(f"--attributes need the digit labels; {data.name} has unlabelled examples")
    cols = [ATTRIBUTES[n].compute(data.x, data.y, data.shape) for n in names]
    return torch.stack(cols, 1)


__all__ = ["ATTRIBUTES", "Attribute", "check_names", "class_ink_medians", "ink_mass", "thickness_given_medians", "labels", "second_moment_slant", "thickness_labels"]
