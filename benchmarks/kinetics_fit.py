"""Time of a full ``learn_kinetics`` fit (issue 17 target: 40 frames of 64² at 16 steps per interval,
with the rate-law comparison and the Laplace σ, in < 5 min on 2 CPU cores) and the memory it keeps.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/kinetics_fit.py [--size 64] [--frames 40] [--steps 16]

The series is synthesised first (not timed; one cell per pixel to keep the synthesis short). Columns:
the fit's own stage timings (fit = every L-BFGS run of every rate law and smoothness weight; laplace =
the Gauss–Newton Hessian and its inverse), the loss+gradient evaluations' mean time, and memory: the
bytes autograd saves per ACR step of the batch (measured with saved-tensor hooks), the bound the
checkpointed rollout keeps (segments of k steps: n/k stored states plus k steps of saved tensors) and
the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

# benchmarks/inverse.py is named like the package: keep this folder off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

from inverse.kinetics import learn_kinetics, synthesize_series  # noqa: E402
from inverse.kinetics.data import prepare  # noqa: E402
from inverse.kinetics.fit import KineticsSettings, _Problem  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="particle edge (pixels)")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--steps", type=int, default=16, help="ACR steps per frame interval")
    parser.add_argument("--max-iter", type=int, default=40, help="L-BFGS iterations per smoothness weight")
    parser.add_argument("--lambdas", default="100,10,1")
    parser.add_argument("--rate-law", default="auto")
    parser.add_argument("--corrections", type=int, default=KineticsSettings().corrections,
                        help="corrector iterations per fixed step (the stand-in also times 0)")
    parser.add_argument(
        "--stand-in",
        action="store_true",
        help="time one loss + gradient and one Laplace forward on stand-in frames (smooth random "
        "fields with the protocol's mean filling) instead of synthesising and fitting: the cost "
        "of an evaluation does not depend on what the frames show",
    )
    args = parser.parse_args()
    print(
        f"host: {platform.processor() or platform.machine()}, os.cpu_count={os.cpu_count()}, "
        f"torch {torch.__version__} threads={torch.get_num_threads()}, load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    if args.stand_in:
        stand_in(args)
        return
    t0 = time.perf_counter()
    series = synthesize_series(
        size_px=args.size, oversample=1, frames=args.frames, c_rates=(2.0, 20.0), seed=0
    )
    synth_s = time.perf_counter() - t0
    settings = KineticsSettings(
        rate_law=args.rate_law,
        steps_per_interval=args.steps,
        corrections=args.corrections,
        max_iter=args.max_iter,
        lambdas=tuple(float(v) for v in args.lambdas.split(",")),
    )

    # memory: what autograd saves for one step of the whole batch of fitted intervals
    from mechanics.phasefield.adjoint import saved_bytes_per_step

    prepared = prepare(
        series,
        n_steps=args.steps,
        holdout_every=settings.holdout_every,
        denoise_px=settings.denoise_px,
        dtype=torch.float64,
    )
    problem = _Problem([prepared], settings, "butler-volmer", torch.float64)
    theta = problem.initial()
    for t in theta.tensors():
        t.requires_grad_(True)
    model = problem.models[0]
    batch = problem.train[0]
    one_step = type(model)(model.physics, model.domain, model.rate_law, 1, 1)
    per_step = saved_bytes_per_step(
        lambda c: one_step.predict((theta.mu, theta.k0, theta.log_k[0]), replace(batch, start=c)), batch.start
    )
    k = settings.checkpoint_every
    state = batch.start.numel() * batch.start.element_size()
    bound = (args.steps // k + 1) * 2 * state + k * per_step

    evals = {"n": 0, "s": 0.0}
    loss = _Problem.loss

    def counted(self, theta, lam):
        start = time.perf_counter()
        out = loss(self, theta, lam)
        evals["n"] += 1
        evals["s"] += time.perf_counter() - start
        return out

    _Problem.loss = counted
    t0 = time.perf_counter()
    fit = learn_kinetics(series, settings, progress=print)
    total = time.perf_counter() - t0
    _Problem.loss = loss
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print()
    print(
        f"series: {args.frames} frames of {series.shape[0]}² ({int(series.mask.sum())} particle pixels), "
        f"synthesised in {synth_s:.0f} s; {len(batch)} fitted intervals × {args.steps} steps"
    )
    print(
        "| size | frames | steps | laws | fit s | laplace s | total s | loss evals | s / eval (forward only) "
        "| saved / step MiB | checkpointed bound MiB | peak RSS MiB | chosen | held-out rms / σ |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    t = fit.fit["timings_s"]
    print(
        f"| {series.shape[0]}² | {args.frames} | {args.steps} | {len(fit.scores)} | {t['fit_s']:.0f} | "
        f"{t['laplace_s']:.0f} | {total:.0f} | {evals['n']} | {evals['s'] / max(evals['n'], 1):.2f} | "
        f"{per_step / 2**20:.1f} | {bound / 2**20:.0f} | {peak_mib:.0f} | {fit.rate_law} | "
        f"{fit.fit['heldout_rms_over_sigma']:.2f} |"
    )


def stand_in(args) -> None:
    import numpy as np
    from scipy import ndimage

    from inverse.kinetics.series import validate_series

    rng = np.random.default_rng(0)
    n, t = args.size, args.frames
    mean = np.linspace(0.05, 0.85, t)
    frames = np.stack(
        [np.clip(m + 0.3 * ndimage.gaussian_filter(rng.standard_normal((n, n)), 3) * 3, 0, 1) for m in mean]
    )
    frames = np.clip(frames + 0.05 * rng.standard_normal(frames.shape), -0.15, 1.15)
    series = validate_series(
        {
            "composition": frames,
            "time_s": np.linspace(0, 800, t),
            "pixel_size_nm": 40.0,
            "c_rate": np.full(t, 0.8 / 800 * 3600),
            "composition_sigma": 0.05,
        }
    )
    settings = KineticsSettings(rate_law="butler-volmer", steps_per_interval=args.steps)
    prepared = prepare(
        series,
        n_steps=args.steps,
        holdout_every=settings.holdout_every,
        denoise_px=settings.denoise_px,
        dtype=torch.float64,
    )
    fitted = len(prepared.intervals) - int(prepared.holdout.sum())
    print(
        f"stand-in series: {t} frames of {n}², {fitted} fitted intervals × {args.steps} steps",
        flush=True,
    )
    print("| law | correctors | loss + gradient s | forward s | peak RSS MiB |")
    print("|---|---|---|---|---|", flush=True)
    from inverse.kinetics.model import LearnedCIET

    closed_form = LearnedCIET.rate_and_slope

    def finite_difference(self, c, eta, mu=None):
        """The baseline: the slope from two more rate evaluations, η ± 10⁻³ (the form before the closed
        one)."""
        h = 1e-3
        rate = closed_form(self, c, eta)[0]
        return rate, (closed_form(self, c, eta - h)[0] - closed_form(self, c, eta + h)[0]).abs() / (2 * h)

    rows = [("butler-volmer", k, None) for k in sorted({0, args.corrections})]
    rows += [("ciet", k, None) for k in sorted({0, args.corrections})]
    rows += [("ciet", args.corrections, finite_difference)]
    for law, corrections, slope in rows:
        problem = _Problem([prepared], replace(settings, corrections=corrections), law, torch.float64)
        theta = problem.initial()
        for p in theta.tensors():
            p.requires_grad_(True)
        LearnedCIET.rate_and_slope = slope or closed_form
        try:
            start = time.perf_counter()
            problem.loss(theta, 10.0).backward()
            grad_s = time.perf_counter() - start
            with torch.no_grad():
                start = time.perf_counter()
                problem.residuals(theta)
                fwd_s = time.perf_counter() - start
        finally:
            LearnedCIET.rate_and_slope = closed_form
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        name = law + (" (finite-difference slope)" if slope else "")
        print(f"| {name} | {corrections} | {grad_s:.1f} | {fwd_s:.1f} | {peak_mib:.0f} |", flush=True)


if __name__ == "__main__":
    main()
