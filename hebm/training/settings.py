"""The settings of a run: typed configs from flat settings with the prior type's defaults
(:func:`resolve_settings`), the two-stage and attribute stages' checks of the trained run they
build on (:func:`load_stage1`), and the loading of that run into the new model
(:func:`init_from_stage1`)."""
from __future__ import annotations

import dataclasses

from ..checkpoint import CheckpointError, load_checkpoint
from ..config import (LADDER_WARMUP, PRIOR_DEFAULTS, SPLIT_SETTINGS, ModelConfig, TrainConfig, build, defaults,
                      split_settings)
from ..data import run_data_for
from ..errors import UserError
from ..models import MODELS, LatentModel, model_class
from ..models.attributes import check_names
from ..models.controllable import default_layers, parse_layers
from ..sampler.checks import ladder_values


def resolve_settings(settings: dict) -> tuple[ModelConfig, TrainConfig]:
    """The configs of a fresh run from flat settings (CLI flags or a dict): the prior's defaults
    (an ebm with ``init`` gets the two-stage ones), the user's values, what the data set fixes
    (x_dim, image shape, the conv/mlp default), and for a two-stage run the stage-1 run's
    architecture (``init``)."""
    settings = dict(settings)
    if settings.get("attributes"):
        return resolve_attribute_stage(settings)
    prior = settings.pop("prior", "ebm")
    if prior not in MODELS:  # (build() names the flag and the choices)
        build(ModelConfig, {"prior": prior})
    two_stage = MODELS[prior].is_two_stage(settings.get("init"))
    mdef, tdef = defaults(prior, two_stage=two_stage)
    mset, tset = split_settings(settings)
    for k in HEAD_SETTINGS:
        if mset.get(k):
            flag = "--" + k.replace("_", "-")
            raise UserError(f"{flag} shapes the attribute heads of --attributes (fine-tuning a trained run); pass "
                            f"--attributes too, or drop {flag}")
    tcfg = build(TrainConfig, {**tdef, **tset})
    if tcfg.init and not two_stage:
        raise UserError(f"--init is for the two-stage priors (--prior ebm or diffusion on a trained run); a "
                        f"{prior} run trains from scratch")
    if two_stage:
        if not tcfg.init:
            raise UserError("--prior diffusion is two-stage: pass --init CKPT of a trained gaussian or ebm run")
        if tcfg.posterior != "q":
            raise UserError("--init (two-stage) takes its positives from the frozen model's inference network: "
                            "drop --posterior langevin")
        init = load_stage1(tcfg.init, tcfg.dataset)
        base = init["model_config"]
        for k in STAGE1_KEYS:
            if k in mset and mset[k] != base[k]:
                raise UserError(f"--{k.replace('_', '-')} must match the stage-1 run --init ({base[k]!r})")
            mdef[k] = base[k]
        mdef.update(MODELS[prior].stage1_settings(base))
        for k in SPLIT_SETTINGS:  # the frozen model's data split, unless asked otherwise
            if k not in tset and k in init["train_config"]:
                tcfg = dataclasses.replace(tcfg, **{k: init["train_config"][k]})
    data = run_data_for(tcfg, download=tcfg.download)
    shape = list(data.train.shape) if data.train.shape else None
    mdef.update(x_dim=data.train.dim, image_shape=shape)
    if mdef.get("arch") is None and mset.get("arch") is None:
        mdef["arch"] = "conv" if shape and shape[1] in (28, 32) and shape[1] == shape[2] else "mlp"
    mcfg = build(ModelConfig, {**mdef, **mset, "prior": prior})
    if mcfg.arch == "conv" and not (shape and shape[1] in (28, 32)):
        raise UserError(f"--arch conv takes 28x28 or 32x32 images; --dataset {tcfg.dataset} has shape {shape}")
    if tcfg.ladder_warmup is None:
        warm = LADDER_WARMUP[mcfg.arch] if mcfg.generator == "ladder" and not two_stage else 0
        tcfg = dataclasses.replace(tcfg, ladder_warmup=warm)
    refuse_unused(model_class(mcfg), tset)
    check_ladder(tcfg.temperatures, tcfg.swap_every)
    return mcfg, tcfg


def check_ladder(temperatures, swap_every, what: str = "the prior chains of training") -> None:
    """``--temperatures`` by the sampler's rule of a ladder (:func:`hebm.sampler.checks.ladder_values`),
    ``--swap-every`` only with it: :class:`UserError` naming the flag."""
    if temperatures is None:
        if swap_every is not None:
            raise UserError(f"--swap-every belongs to --temperatures (replica exchange of {what}): pass "
                            f"--temperatures too, or drop --swap-every")
        return
    try:
        ladder_values(temperatures, "--temperatures")
    except (TypeError, ValueError) as e:
        raise UserError(str(e)) from None


def refuse_unused(cls, given: dict) -> None:
    """A setting the model's kind has no use for (``cls.ignored_settings``), given with a value that
    would matter: :class:`UserError` naming the flag — accepting it without a word would let the
    user believe it acted."""
    for k, why in cls.ignored_settings.items():
        if given.get(k):
            flag = "--" + k.replace("_", "-")
            raise UserError(f"{flag}: {why}; drop {flag}")


def load_stage1(path: str, dataset) -> dict:
    """The checkpoint of the trained run a later stage builds on (``--init``), checked: a gaussian
    or ebm run without attribute heads, trained on ``dataset`` (None: any)."""
    init = load_checkpoint(path, flag="--init")
    base, itc = init["model_config"], init["train_config"]
    if base.get("prior") not in MODELS or not MODELS[base.get("prior")].serves_as_stage1:
        ok = " or ".join(k for k, c in MODELS.items() if c.serves_as_stage1)
        raise CheckpointError(f"--init {path!r} is a {base.get('prior')} run; it must be a {ok} run")
    if base.get("attributes"):
        raise CheckpointError(f"--init {path!r} already has attribute heads ({', '.join(base['attributes'])}); "
                              f"start from the run it was fine-tuned on")
    if dataset is not None and itc.get("dataset") != dataset:
        raise CheckpointError(f"--init {path!r} was trained on {itc.get('dataset')}, not {dataset} (--dataset)")
    return init


def resolve_attribute_stage(settings: dict) -> tuple[ModelConfig, TrainConfig]:
    """The configs of an attribute fine-tuning run (``--attributes`` on ``--init RUN``): the
    trained run's model, unchanged, plus the heads; its data split; the attribute stage's
    defaults (config.PRIOR_DEFAULTS["attributes"]) under the user's values."""
    init_path = settings.get("init")
    if not init_path:
        raise UserError("--attributes fine-tunes a trained run: pass --init RUN/ckpt.pt (a gaussian or ebm run)")
    init = load_stage1(init_path, settings.get("dataset"))
    base = dict(init["model_config"])
    if "prior" in settings and settings["prior"] != base["prior"]:
        raise UserError(f"--prior {settings['prior']}: --init {init_path!r} is a {base['prior']} run (attribute "
                        f"fine-tuning keeps its prior; drop --prior)")
    settings.pop("prior", None)
    mset, tset = split_settings(settings)
    heads = {"attributes", *HEAD_SETTINGS}
    changed = sorted(k for k in mset if k not in heads and mset[k] != base.get(k))
    if changed:
        raise UserError(f"--{changed[0].replace('_', '-')}: attribute fine-tuning keeps the trained run's model "
                        f"(it is frozen); only --attributes, --attribute-layers and --attribute-hidden apply")
    try:
        names = check_names(mset["attributes"])
        L = len(base["latent_dims"])
        parse_layers(names, mset.get("attribute_layers"), L, default_layers(base.get("generator", "bottom"), L))
    except ValueError as e:
        raise UserError(str(e)) from None
    itc = init["train_config"]
    _, tdef = defaults(base["prior"])
    tdef.update({k: v for k, v in PRIOR_DEFAULTS["attributes"].items() if k in tdef})
    for k in ("dataset", "data_root", "seed", *SPLIT_SETTINGS):
        tdef[k] = itc.get(k, tdef[k])
    tcfg = build(TrainConfig, {**tdef, **tset})
    mcfg = build(ModelConfig, {**base, **{k: v for k, v in mset.items() if k in heads}, "attributes": names})
    refuse_unused(model_class(mcfg), tset)
    check_ladder(tcfg.temperatures, tcfg.swap_every)
    return mcfg, tcfg


#: the model settings of the attribute heads (they need --attributes)
HEAD_SETTINGS = ("attribute_layers", "attribute_hidden")
#: the model settings a two-stage run takes from its stage-1 run (the frozen networks' shapes)
STAGE1_KEYS = ("arch", "generator", "x_dim", "image_shape", "latent_dims", "inference", "enc_hidden", "dec_hidden", "channels",
               "prior_hidden", "act", "sigma_x", "sigma_min", "sigma_clamp")


def init_from_stage1(model: LatentModel, path: str) -> None:
    """Stage 2 (docs/design.md §2b): load the trained model of the stage-1 run ``path`` into a
    two-stage model — everything but the energies it learns afresh (``model.stage2_prefixes``:
    the diffusion's level energies, the two-stage EBM's energies)."""
    fresh = model.stage2_prefixes
    ck = load_checkpoint(path, flag="--init")
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(fresh)}
    state = {k: v for k, v in ck["model"].items() if not k.startswith(fresh)}
    missing = [k for k in own if k not in state]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or shapes:
        raise CheckpointError(f"--init {path!r} does not match the model (missing {missing[:4]}, "
                              f"shape mismatches {shapes[:4]})")
    model.load_state_dict({**model.state_dict(), **{k: state[k] for k in own}})


__all__ = ["HEAD_SETTINGS", "STAGE1_KEYS", "check_ladder", "init_from_stage1", "load_stage1", "refuse_unused", "resolve_attribute_stage",
           "resolve_settings"]
