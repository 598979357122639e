"""A model from its config (:func:`build_model`) or from a checkpoint (:func:`load_model`), and the
table of model kinds by ``--prior`` name (:data:`MODELS`)."""
from __future__ import annotations

from ..checkpoint import CheckpointError, load_checkpoint, load_state_checked
from ..config import PRIOR_TYPES, ModelConfig, TrainConfig, build
from .base import GaussianModel, LatentModel
from .controllable import controllable_class
from .diffusion import DiffusionModel
from .ebm import EBMModel


MODELS = {"gaussian": GaussianModel, "ebm": EBMModel, "diffusion": DiffusionModel}
assert set(MODELS) == set(PRIOR_TYPES)


def model_class(cfg: ModelConfig) -> type:
    """The class of a run's model: the kind of ``cfg.prior``, with attribute heads when
    ``cfg.attributes`` is set (:mod:`hebm.models.controllable`)."""
    cls = MODELS[cfg.prior]
    return controllable_class(cls) if cfg.attributes else cls


def build_model(cfg: ModelConfig) -> LatentModel:
    """The model of a run from its :class:`hebm.config.ModelConfig`."""
    return model_class(cfg)(cfg)


def load_model(path: str, device="cpu"):
    """``(model, ModelConfig, TrainConfig, checkpoint)`` from a ``ckpt.pt`` written by ``hebm.train``
    (loaded with ``weights_only=True`` and verified: :func:`hebm.checkpoint.load_checkpoint`)."""
    ck = load_checkpoint(path, map_location=device)
    try:
        mcfg = build(ModelConfig, ck["model_config"])
        tcfg = build(TrainConfig, ck["train_config"])
        model = build_model(mcfg)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path!r} holds an unusable config ({e})") from None
    load_state_checked(model, ck["model"], path)
    model.to(device).eval()
    return model, mcfg, tcfg, ck


__all__ = ["MODELS", "build_model", "load_model", "model_class"]
