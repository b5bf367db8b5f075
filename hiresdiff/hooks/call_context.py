"""What the UNet call in progress is: its time, where that time lies on the stage's grid, and its scale relative to
the trained size.

Per-call modifications that live below the UNet (dilated convs, fused self-attention, feature
upsamplers) need the current timestep, its step fraction (:mod:`hiresdiff.core.step_fraction`: the one time axis of
every window) and the size of the current call. The timestep stays the call's own
tensor on its device: recording it costs no host-device sync (a part that branches on t reads one scalar).
A hook on the UNet itself
records them for the duration of each call (:class:`CallContextHook`); hooks on submodules read them
with :func:`current_call`. Nothing counts calls, so extra UNet calls (Upsample Guidance's low-resolution
branch, second-order schedulers, CFG batches) each see their own context. Nested calls (a call made
from inside another) restore the outer context when they return, also on an exception.

The context hook is the innermost hook on the UNet: attach it before any hook that calls the UNet
again (Upsample Guidance), so that each real call passes through it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch

from hiresdiff.core.step_fraction import Clock, continuous_clock, step_fraction
from hiresdiff.hooks.base import DenoiserCallHook, attach, attached, detach

CALL_CONTEXT_HOOK = "hiresdiff_call_context"


def scheduler_clock(scheduler_source: Callable[[], Any], call_unit: float) -> Clock:
    """The step-fraction clock of the grid ``scheduler_source()`` samples, for denoiser times in ``call_unit`` (a
    UNet's times are the scheduler's own, T = ``num_train_timesteps``; FLUX's transformer gets σ = timestep/1000).

    The grid is read at every call (a pipeline sets it inside its call): where each of its N steps starts, i.e. its
    distinct ``timesteps`` (times within 10⁻⁶ of each other are one: KDPM2 ancestral's midpoints can fall on its step
    times), every other one where there are 2N − 1 of them (KDPM2 and PNDM interleave midpoints; Heun repeats its
    step times); the full grid also in a restarted stage, which starts at index K of it. Before ``set_timesteps``
    the continuous limit 1 − t/unit."""

    last = {}  # the step starts of the grid last read, by the identity of its timesteps tensor

    def step_starts(scheduler, grid) -> torch.Tensor:
        times_desc = torch.as_tensor(grid, dtype=torch.float64).cpu().unique().flip(0)
        keep = [0] + [
            i
            for i in range(1, len(times_desc))
            if times_desc[i - 1] - times_desc[i] > 1e-6 * max(1.0, abs(float(times_desc[i])))
        ]
        starts = times_desc[keep]
        if len(starts) == 2 * (getattr(scheduler, "num_inference_steps", None) or 0) - 1:
            starts = starts[::2]
        return starts * (call_unit / scheduler.config.num_train_timesteps)

    def clock(times: torch.Tensor) -> torch.Tensor:
        scheduler = scheduler_source()
        grid = getattr(scheduler, "timesteps", None)
        if grid is None:
            return step_fraction(times, None, call_unit)
        if last.get("grid") is not grid:  # set_timesteps makes a new tensor: read each grid once, not every call
            last.update(grid=grid, starts=step_starts(scheduler, grid))
        return step_fraction(times, last["starts"], call_unit)

    return clock


@dataclass(frozen=True)
class UNetCall:
    """One UNet call: ``timestep`` (the call's own tensor, on its device, scalar or (B,)),
    the sample's trailing ``size``
    ((H, W) or (F, H, W)), ``scale`` = (H/h0, W/w0) relative to the trained latent size (h0, w0),
    and the ``clock`` of its stage's grid (times → step fraction)."""

    timestep: torch.Tensor
    size: tuple[int, ...]
    scale: tuple[float, float]
    clock: Clock

    @functools.cached_property
    def progress(self) -> float:
        """The call's step fraction (of the largest t of a batch): 0 at the first step of a full run, → 1 at the end.
        Computed once per call, on first use (it reads the time on the host)."""
        return float(self.clock(self.timestep.max()))


class CallContextHook(DenoiserCallHook):
    """Records a :class:`UNetCall` while the UNet (or flow transformer) runs; holds the trained latent size, the unit of
    the denoiser's time (a UNet: T of its schedule; a flow transformer: its layout's, σ·unit is its ``timestep``) and
    the clock of the stage's grid (default: the continuous one, p = 1 − t/unit)."""

    def __init__(self, trained_size: Sequence[int], time_unit: float, layout=None, clock: Optional[Clock] = None):
        super().__init__()
        self.trained_size = tuple(trained_size)
        self.time_unit = time_unit
        self.layout = layout
        self.clock = clock or continuous_clock(time_unit)
        self.current: Optional[UNetCall] = None

    def new_forward(self, module, *args, **kwargs):
        arguments = self.arguments(module, args, kwargs)
        timestep = arguments["timestep"]
        if self.layout is None:
            sample = arguments["sample"]
            size = tuple(sample.shape[2:])
        else:
            sample = arguments[self.layout.input_name]
            size = self.layout.grid_size(arguments)
        h0, w0 = self.trained_size
        timestep = timestep if isinstance(timestep, torch.Tensor) else torch.tensor(timestep, device=sample.device)
        call = UNetCall(timestep.detach(), size, (size[-2] / h0, size[-1] / w0), self.clock)
        outer, self.current = self.current, call
        try:
            return self.fn_ref.original_forward(*args, **kwargs)
        finally:
            self.current = outer


def apply_call_context(
    unet, trained_size: Sequence[int], time_unit: float, layout=None, clock: Optional[Clock] = None
) -> CallContextHook:
    """Attach the context hook to ``unet`` (trained latent size (h0, w0), the unit of its time: T of a UNet's schedule,
    a flow transformer's layout unit; a flow transformer's ``layout`` says where its grid is; ``clock``: the stage's,
    :func:`scheduler_clock`)."""
    hook = CallContextHook(trained_size, time_unit, layout, clock)
    attach(unet, hook, CALL_CONTEXT_HOOK)
    return hook


def remove_call_context(unet) -> None:
    detach(unet, CALL_CONTEXT_HOOK)


def current_call(unet) -> Optional[UNetCall]:
    """The call of ``unet`` in progress, or ``None`` outside a call or without the context hook."""
    hook = attached(unet, CALL_CONTEXT_HOOK)
    return hook.current if hook is not None else None
