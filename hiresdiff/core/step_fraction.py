"""The one time axis of every window (docs/architecture.md, "One time axis for every window").

A part that acts only early in sampling (Upsample Guidance's η, FreeScale's dilation and position ``until``, its
detail control, Self-Cascade's feature-upsampler threshold, a cascade's restart strength) reads where the call
is on the **step fraction** p ∈ [0, 1] of its stage's full grid: the call at step i of a grid of N steps has
p = i/N, times between two grid steps (a second-order solver's midpoints, UG's low-resolution calls at their
matched time) are placed linearly between them, and times below the last step run on linearly to p = 1 at
time 0. A window of share η is the steps with p < η: the first ⌈η·N⌉ of them.

Why steps and not σ: σ moves with the schedule — FLUX and SD3 shift their grid with the resolution, so at 4×
nearly every step of FLUX's grid sits at σ > 0.7 and a window "σ ≥ 1 − η" covers all of them whatever η —
while the step fraction means the same on every scheduler, shift and model family (a VP model's uniform
grid has p ≈ 1 − t/T, where the papers define their windows; Karras, EDM and shifted flow grids do not).
A restart at strength s begins at p = 1 − s (img2img's convention), so windows and restarts share the axis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch

Clock = Callable[[torch.Tensor], torch.Tensor]


def step_fraction(times, step_times: Optional[torch.Tensor], unit: float = 1000.0) -> torch.Tensor:
    """p(t) for denoiser times ``times`` (any shape) on a grid whose step i starts at ``step_times[i]`` (decreasing,
    N entries, in the same unit as ``times``): i/N at step i (a time within float32 rounding of it included), linear
    between steps and from the last step to p = 1 at time 0, 0 before the first. Without a grid (``None``: a
    scheduler before ``set_timesteps``) the continuous limit 1 − t/``unit``. Float64 on the CPU."""
    times = torch.as_tensor(times, dtype=torch.float64).detach().cpu()
    if step_times is None or len(step_times) == 0:
        return (1 - times / unit).clamp(0, 1)
    grid = torch.as_tensor(step_times, dtype=torch.float64).detach().cpu().reshape(-1)
    steps = len(grid)
    fractions = torch.arange(steps, dtype=torch.float64) / steps
    keep = torch.ones(steps, dtype=torch.bool)  # a repeated time keeps its first (earliest) step
    keep[1:] = grid[1:] < torch.cummin(grid, 0).values[:-1]
    grid, fractions = grid[keep], fractions[keep]
    if grid[-1] > 0:
        grid, fractions = torch.cat([grid, grid.new_zeros(1)]), torch.cat([fractions, fractions.new_ones(1)])
    if len(grid) == 1:
        return torch.full(times.shape, float(fractions[0]), dtype=torch.float64)
    # a time that is a grid time up to float32 rounding (FLUX's pipeline passes timestep/1000) is that step
    x = times.reshape(-1)
    nearest = (x[:, None] - grid[None, :]).abs().argmin(1)
    snap = (x - grid[nearest]).abs() <= 1e-6 * grid[nearest].abs()
    x = torch.where(snap, grid[nearest], x)
    # piecewise linear on the increasing axis −grid
    x, xp, fp = -x, -grid, fractions
    index = torch.searchsorted(xp, x).clamp(1, len(xp) - 1)
    left, right = xp[index - 1], xp[index]
    weight = ((x - left) / (right - left)).clamp(0, 1)
    p = fp[index - 1] + weight * (fp[index] - fp[index - 1])
    p = torch.where(x <= xp[0], fp[0], torch.where(x >= xp[-1], fp[-1], p))
    return p.reshape(times.shape)


def in_window(fraction, share: float) -> torch.Tensor:
    """Whether step fraction(s) ``fraction`` lie in a window of ``share`` from the start: p < share (the first
    ⌈share·N⌉ steps of N; share 1 every step, 0 none). The tolerance absorbs i/N rounding."""
    return torch.as_tensor(fraction, dtype=torch.float64) < share - 1e-9


def continuous_clock(unit: float) -> Clock:
    """The clock of a grid with infinitely many uniform steps: p = 1 − t/``unit`` (what a bare call without a
    scheduler falls back to)."""
    return lambda times: step_fraction(times, None, unit)
