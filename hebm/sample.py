"""``python -m hebm.sample --ckpt CKPT``: sample grids, hierarchical sampling, long-run chains.

    python -m hebm.sample --ckpt runs/ebm-digits-…/ckpt.pt                  # samples grid
    python -m hebm.sample --ckpt … --hierarchical                           # one row per layer i
    python -m hebm.sample --ckpt … --long-run 2500                          # energy profile + chain grid

* Plain: ``--n`` samples from the model's prior (ancestral for gaussian, ũ-space Langevin from
  N(0, I) for ebm, the reverse ũ-diffusion for diffusion), decoded to the generator mean.
* ``--hierarchical`` (docs/papers.md B §4.1 / §5.5): draw ``--ncol`` prior samples ũ⁽ʳ⁾; for each
  layer i, row i keeps every layer of sample 0 except layer i, which is taken from sample r —
  done in ũ-space (``z̃ = T_β(ũ)``), the natural variant for a conditional hierarchy: changing
  ``u_i`` changes ``z_i`` and, through the conditionals, everything below it.  Rows top layer
  first.  For the diffusion prior also ``*_levels.png``: the decodes of ``T_β(ũ_t)`` at every level
  t = T … 0 (the authors' progressive figure).
* ``--save DIR`` (with ``--n N``): the samples as files a field's FID tool reads — ``DIR/000000.png``
  … (one image each, 8-bit, the generator mean in [0, 1]; pytorch-fid and torch-fidelity take a
  folder of PNGs, as the authors' evaluation does) and ``DIR/samples.npz`` (``images`` uint8
  ``[N, H, W, C]``, ``x`` the flat [-1, 1] values, ``z`` the latents).  ``--recon`` writes the
  model's **Recon** set instead: x → z̃ ~ q(z̃ | x) → g(z̃) for N random training images, the floor
  any prior on this generator could reach.  ``DIR`` must hold no images yet and is locked
  (``DIR/.lock``) while it is written: a second ``hebm.sample`` on it is refused.
* Destinations are checked before any chain runs: ``--out`` and ``--save`` that are files, lie
  under a file or cannot be written (a read-only file system) are one line naming the flag.
* ``--attribute NAME=VALUE`` (repeatable; a checkpoint fine-tuned with ``--attributes``,
  docs/controllable.md): samples of ``p(z̃ | y)`` — conditional chains, every chain with its own
  values in one fused call; attributes not given are drawn with the training images'
  frequencies given the ones that are.  ``--long-run`` and ``--hierarchical`` sample the
  unconditional prior, so they refuse ``--attribute``.
* ``--long-run K`` (paper 1's long-run figure, docs/papers.md B §5.6): ``--nchains`` prior chains
  run K Langevin steps (ebm; for diffusion K steps per level).  ``*_longrun_energy.png`` plots
  the mean target log π(u) and the mean energy F(z̃) per step; ``*_longrun_chain.png`` decodes
  10 evenly spaced steps; ``*_longrun.json`` reports the profile and whether the chains stay in
  the data region: at every snapshot, the fraction of chains whose latents lie inside the
  aggregate posterior's 99 % Mahalanobis region (a Gaussian fit of z̃ ~ q(z̃ | x) over the
  training data); "stays in the data region" when that fraction stays ≥ 0.9.
* ``--diagnostics`` / ``--trace-netcdf PATH`` (with ``--long-run``, ebm; docs/design.md §2d): the
  per-chain log π and, for labelled images, a classifier's label of each chain's decodes, every
  ⌈K/1000⌉-th step; bulk/tail ESS and ESS/s, rank-normalised split R-hat, MCSE, autocorrelation
  time and class switches by arviz-stats over the second half, printed and written to
  ``*_longrun.json`` (``diagnostics``); the traces as an ArviZ DataTree in netCDF.
"""
from __future__ import annotations

import math
import os
import sys

import torch

from . import cli, files
from .config import SAMPLE_SHARED, SampleConfig, TrainConfig
from .data import run_data_for
from .errors import UserError
from .evaluation import mixing
from .evaluation.figures import plot_profile, save_grid, save_scatter, to_images
from .evaluation.samples import IN_REGION, PosteriorRegion, hierarchical_grid, long_run, require_images, save_image_set
from .models import load_model
from .models.attributes import labels as attribute_labels
from .models.controllable import draw_values, parse_fixed
from .sampler.results import DivergenceError
from .training.settings import check_ladder


def build_parser():
    """The flags of :class:`hebm.config.SampleConfig`, and those it shares with training
    (:data:`hebm.config.SAMPLE_SHARED`: training's types and ranges), generated."""
    p = cli.Parser(prog="python -m hebm.sample", description="Sample from a trained hebm checkpoint.")
    cli.add_arguments(p, (SampleConfig,), defaults={})
    cli.add_arguments(p, (TrainConfig,), only=list(SAMPLE_SHARED), defaults=SAMPLE_SHARED)
    return p


def main(argv=None) -> int:
    try:
        a = build_parser().parse_args(argv)
    except SystemExit as e:  # a bad flag (one line, status 2) or --help (0)
        return int(e.code or 0)

    def go() -> int:
        if a.device == "cpu":
            torch.set_num_threads(1)
        # the flags together, the checkpoint, then the destinations: all before a chain runs
        if a.recon and not a.save:
            raise UserError("--recon writes the reconstruction set to --save DIR: pass --save DIR")
        if a.metropolis and not a.long_run:
            raise UserError("--metropolis adjusts the long-run chain: pass --long-run K too")
        if (a.temperatures is not None or a.swap_every is not None) and not a.long_run:
            flag = "--temperatures" if a.temperatures is not None else "--swap-every"
            raise UserError(f"{flag} runs the long-run chains as replica-exchange ladders: pass --long-run K too")
        check_ladder(a.temperatures, a.swap_every, "the long-run chains")
        for flag, on in (("--diagnostics", a.diagnostics), ("--trace-netcdf", a.trace_netcdf)):
            if on and not a.long_run:
                raise UserError(f"{flag} measures the long-run chains: pass --long-run K too")
        for flag, on in (("--long-run", a.long_run), ("--hierarchical", a.hierarchical)):
            if a.attribute and on:
                raise UserError(f"--attribute conditions the --n samples (and --save); {flag} draws from the "
                                f"unconditional prior and would ignore it: run {flag} without --attribute")
        model, mcfg, tcfg, _ = load_model(a.ckpt, a.device)
        if a.temperatures is not None and a.long_run and model.has_levels:
            raise UserError("--temperatures: the diffusion's long run changes target at every level; replica exchange "
                            "runs an ebm checkpoint's long run")
        if (a.diagnostics or a.trace_netcdf) and a.long_run and model.has_levels:
            raise UserError(f"{'--diagnostics' if a.diagnostics else '--trace-netcdf'} judges chains that share one "
                            f"target; the diffusion's long run changes target at every level and conditions each "
                            f"chain on its own state: use it with an ebm checkpoint")
        K = tcfg.langevin_steps if a.langevin_steps is None else a.langevin_steps
        delta = tcfg.langevin_step_size if a.langevin_step_size is None else a.langevin_step_size
        shape = mcfg.image_shape
        draw = model_draw(model, tcfg, K, delta)
        prefix = a.out or os.path.join(os.path.dirname(os.path.abspath(a.ckpt)), "sample")
        if not (a.save and a.recon):  # (the Recon set alone writes nothing next to --out)
            files.writable_directory("--out" if a.out else "--out (by default next to --ckpt)",
                                     os.path.dirname(os.path.abspath(prefix)), given=prefix)
        if a.trace_netcdf and a.long_run:
            files.writable_file("--trace-netcdf", a.trace_netcdf)
        lock = None
        if a.save:
            require_images(shape)
            lock = files.DirectoryLock(a.save)  # two hebm.sample on one --save: the second is refused
            lock.acquire("--save", "hebm.sample")
        try:
            return work(model, mcfg, tcfg, K, delta, shape, draw, prefix)
        finally:
            if lock is not None:
                lock.release()

    def model_draw(model, tcfg, K, delta):
        """The latents of chains j0 … j1−1: the model's prior, or p(z | y) with --attribute."""
        if not a.attribute:
            return lambda j0, j1: model.sample_latents(j1 - j0, seed=a.seed, n_steps=K, step_size=delta, fused=a.fused,
                                                       chain_offset=j0, check="raise")
        names = list(getattr(model, "attributes", []) or [])
        if not names:
            raise UserError(f"--attribute: {a.ckpt} has no attribute heads (fine-tune it with hebm.train --init "
                            f"{a.ckpt} --attributes digit,thickness,slant)")
        fixed = parse_fixed(a.attribute, names)
        values = draw_values(attribute_labels(run_data_for(tcfg).train, names), names, fixed, a.n, a.seed)
        return lambda j0, j1: model.sample_latents_given(values[j0:j1], seed=a.seed, n_steps=K, step_size=delta,
                                                         fused=a.fused, chain_offset=j0, check="raise")

    def work(model, mcfg, tcfg, K, delta, shape, draw, prefix) -> int:
        written = []
        if a.save and any(n.endswith(".png") or n == "samples.npz" for n in os.listdir(a.save)):
            raise UserError(f"--save {a.save!r} already holds images; pick an empty or new directory (a set "
                            f"mixed from two runs would be scored as one)")
        try:
            if a.save:
                if a.recon:
                    data = run_data_for(tcfg)
                    g = torch.Generator().manual_seed(a.seed)
                    rows = torch.randperm(len(data.train), generator=g)[: a.n]
                    xs = data.train.x[rows].to(a.device)
                    with torch.no_grad():
                        zs = torch.cat([model.posterior(xs[j: j + 500], g).z for j in range(0, len(xs), 500)])
                        xr = model.decode(zs)
                    n = save_image_set(xr, zs, shape, a.save)
                    print(f"[hebm.sample] wrote {n} reconstructions of training images (the Recon set) to {a.save}")
                    return 0
                zs = torch.cat([draw(j, min(a.n, j + 500)) for j in range(0, a.n, 500)])
                with torch.no_grad():
                    xs = model.decode(zs)
                n = save_image_set(xs, zs, shape, a.save)
                written.append(f"{a.save}/ ({n} PNGs + samples.npz)")
            with torch.no_grad():
                x = model.decode(draw(0, min(a.n, 256)))
            if shape:
                save_grid(to_images(x, shape), prefix + ".png", nrow=a.nrow)
            else:
                save_scatter(x, run_data_for(tcfg).train.x, prefix + ".png")
            written.append(prefix + ".png")
            if a.hierarchical:
                if not shape:
                    print("[hebm.sample] --hierarchical draws image grids; skipped for non-image data", file=sys.stderr)
                else:
                    h = hierarchical_grid(model, ncol=a.ncol, seed=a.seed, n_steps=K, step_size=delta, fused=a.fused)
                    save_grid(to_images(h, shape), prefix + "_hierarchical.png", nrow=a.ncol)
                    written.append(prefix + "_hierarchical.png")
                    if model.has_levels:
                        _, levels = model.sample_latents(a.ncol, seed=a.seed, n_steps=K, fused=a.fused, return_levels=True)
                        with torch.no_grad():
                            dec = torch.cat([model.decode(model.prior.T(u)) for u in levels])
                        save_grid(to_images(dec, shape), prefix + "_levels.png", nrow=a.ncol)
                        written.append(prefix + "_levels.png")
            if a.long_run:
                data = run_data_for(tcfg)
                with torch.no_grad():
                    zq = model.posterior(data.train.x.to(a.device), torch.Generator().manual_seed(a.seed)).z
                region = PosteriorRegion(zq)
                acceptance = []
                traced = a.diagnostics or bool(a.trace_netcdf)
                traces = {} if traced else None
                labeller = mixing.label_classifier(tcfg, seed=a.seed) if traced and shape else None
                every = max(1, math.ceil(a.long_run / TRACE_DRAWS))
                swaps = {}
                logs, energy, inside, marks, snaps = long_run(model, n_chains=a.nchains, K=a.long_run, seed=a.seed,
                                                              step_size=delta, fused=a.fused, region=region,
                                                              metropolis=a.metropolis, acceptance=acceptance,
                                                              traces=traces, every=every,
                                                              classify=labeller[0] if labeller else None,
                                                              temperatures=a.temperatures, swap_every=a.swap_every or 1,
                                                              swaps=swaps)
                plot_profile(logs, prefix + "_longrun_energy.png", f"{mcfg.prior} prior, {a.long_run}-step chain "
                             f"(train K = {K})")
                written.append(prefix + "_longrun_energy.png")
                if shape:
                    sel = snaps[:, : min(a.nchains, 8)]
                    save_grid(to_images(sel.reshape(-1, sel.shape[-1]), shape), prefix + "_longrun_chain.png",
                              nrow=sel.shape[1])
                    written.append(prefix + "_longrun_chain.png")
                stays = all(f >= IN_REGION for f in inside)
                rep = dict(K=a.long_run, train_K=K, n_chains=a.nchains, steps=marks, log_density_first=float(logs[0]),
                           log_density_last=float(logs[-1]), log_density_min=float(logs.min()),
                           log_density_max=float(logs.max()), mean_energy=energy, inside_fraction=inside,
                           stays_in_data_region=stays, metropolis=a.metropolis,
                           acceptance=acceptance if a.metropolis else None)
                if a.temperatures is not None:
                    rep["replica_exchange"] = ladder_report(swaps, a.temperatures, a.swap_every or 1, a.long_run,
                                                            len(marks))
                if traced:
                    diag = mixing_report(traces, labeller, a.long_run)
                    if a.diagnostics:
                        rep["diagnostics"] = diag
                    if a.trace_netcdf:
                        write_traces(a.trace_netcdf, traces, labeller, diag)
                        written.append(a.trace_netcdf)
                with open(prefix + "_longrun.json", "w") as f:
                    files.dump_json(rep, f, indent=2)
                written.append(prefix + "_longrun.json")
                print(f"[hebm.sample] long run of {a.long_run} steps: log π {float(logs[0]):.2f} -> {float(logs[-1]):.2f}, "
                      f"inside the posterior's 99% region {inside[0]:.2f} -> {inside[-1]:.2f}: chains "
                      f"{'stay' if stays else 'do NOT stay'} in the data region"
                      + (f"; MALA acceptance {min(acceptance):.2f}-{max(acceptance):.2f} per segment" if a.metropolis
                         else ""))
                if a.diagnostics:
                    print(diagnostics_line(rep["diagnostics"], acceptance if a.metropolis else None))
                if a.temperatures is not None:
                    pt = rep["replica_exchange"]
                    rates = ", ".join("nan" if r is None else f"{r:.2f}" for r in pt["swap_rate_per_pair"])
                    print(f"[hebm.sample] replica exchange, ladder {pt['temperatures']}: swap rate per pair {rates}; "
                          f"{pt['round_trips_per_1000_steps']:.2f} round trips per 1,000 steps per ladder "
                          f"(counted within each of the {pt['segments']} calls)")
        except DivergenceError as e:
            raise UserError(f"{e.args[0].split(';')[0]}; lower --langevin-step-size (now {delta:g}) or --langevin-steps")
        print("[hebm.sample] wrote " + ", ".join(written))
        return 0

    return cli.run("hebm.sample", go)


#: the most draws per chain a traced long run keeps: every ⌈K / TRACE_DRAWS⌉-th step
TRACE_DRAWS = 1000


def ladder_report(swaps: dict, temperatures: list, swap_every: int, K: int, segments: int) -> dict:
    """``replica_exchange`` of ``*_longrun.json``: the ladder, each neighbour pair's swap rate over
    all ladders (None where a pair never proposed), and the round trips (cold → hottest → cold,
    counted within each sampler call: a trip across a call's end is not seen) per 1,000 steps per
    ladder."""
    R = len(temperatures)
    out = dict(temperatures=list(temperatures), swap_every=swap_every, segments=segments)
    if R < 2 or not swaps:
        return dict(out, swap_rate_per_pair=[], round_trips=0, round_trips_per_1000_steps=0.0)
    att, acc = swaps["swap_attempts"].sum(0), swaps["swap_accepted"].sum(0)
    trips = int(swaps["round_trips"].sum())
    G = swaps["swap_attempts"].shape[0]
    return dict(out, swap_rate_per_pair=[float(s) / float(n) if int(n) else None for s, n in zip(acc, att)],
                swap_attempts_per_pair=att.tolist(), round_trips=trips,
                round_trips_per_1000_steps=1000.0 * trips / (G * K) if K else 0.0)


def mixing_report(traces: dict, labeller, K: int) -> dict:
    """The ``diagnostics`` of ``*_longrun.json``: :func:`hebm.evaluation.mixing.diagnostics` of the
    per-chain log π over the second half of the draws (the first half is warm-up), the ESS per
    second of the sampler time those steps took; with labels, the class-switch count and the
    indicators' ESS over the same draws."""
    ld, every = traces["log_density"], traces["every"]
    n = ld.shape[0]
    warm = n // 2
    seconds = traces["sampler_seconds"] * (n - warm) * every / K
    out = dict(warmup_draws=warm, library=f"arviz-stats {_version('arviz-stats')}",
               log_density=mixing.diagnostics(ld[warm:], seconds=seconds, every=every))
    if labeller is not None:
        y = traces["class_label"][warm:]
        out["classes"] = dict(classifier_acc=labeller[2], **mixing.class_switches(y, every=every),
                              indicator_ess=mixing.indicator_ess(y, labeller[1]))
    return out


def write_traces(path: str, traces: dict, labeller, diag: dict) -> None:
    """The traces as an ArviZ DataTree in netCDF (``posterior`` / ``warmup_posterior``)."""
    arrays = {"log_density": traces["log_density"].double().numpy()}
    if labeller is not None:
        arrays["class_label"] = traces["class_label"].numpy()
        arrays["class_indicator"] = mixing.one_hot(traces["class_label"], labeller[1])
    mixing.write_netcdf(path, arrays, warmup=diag["warmup_draws"],
                        attrs=dict(steps_per_draw=int(traces["every"]), source="hebm.sample --long-run"))


def diagnostics_line(d: dict, acceptance) -> str:
    """One line: ESS/s (bulk, tail), R-hat, the autocorrelation time, MALA's acceptance, class switches."""
    ld = d["log_density"]

    def f(x, spec):
        return "n/a" if x is None or x != x else format(x, spec)

    s = (f"[hebm.sample] mixing of log π over the last {ld['draws']} draws x {ld['chains']} chains: ESS bulk "
         f"{f(ld['ess_bulk'], '.0f')} ({f(ld['ess_bulk_per_s'], '.1f')}/s), tail {f(ld['ess_tail'], '.0f')} "
         f"({f(ld['ess_tail_per_s'], '.1f')}/s), R-hat {f(ld['rhat'], '.3f')}, autocorrelation time "
         f"{f(ld['iat_steps'], '.1f')} steps")
    if acceptance:
        s += f", MALA acceptance {sum(acceptance) / len(acceptance):.2f}"
    c = d.get("classes")
    if c:
        s += (f"; class switches {f(c['switches_per_1000_steps'], '.2f')} per 1000 steps, classes visited per chain "
              f"{min(c['classes_visited'])}-{max(c['classes_visited'])}, min class-indicator ESS "
              f"{f(c['indicator_ess']['min'], '.0f')} (largest class-indicator R-hat "
              f"{f(c['indicator_ess']['rhat_max'], '.3f')})")
    return s + f" ({d['library']})"


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
