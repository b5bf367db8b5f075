"""The restart primitive: a stage that starts at step K of its scheduler's own grid, the img2img contract.

diffusers' img2img pipelines start at step K by sampling ``timesteps[K:]`` (a local copy) and telling the
scheduler ``set_begin_index(K)``; the scheduler keeps its whole grid, so multistep solvers (DPM-Solver++,
UniPC, DEIS), LCM and TCD, which compare their absolute step index with the grid's length or read the
next timestep from it, step exactly as in a full run. :class:`RestartedScheduler` gives any text-to-image
or text-to-video pipeline that contract without touching the pipeline or the caller's scheduler: it is a
view of a *fresh copy* of the scheduler whose ``timesteps`` are the grid from index K on and whose begin
index is K plus whatever the pipeline asks for (SDXL's pipeline calls ``set_begin_index(0)`` before its
loop; the view makes that K). Everything else (``step``, ``scale_model_input``, ``init_noise_sigma``,
``order``, ``config``) is the copy's own. :func:`stage_pipeline` hands a pipeline such a scheduler for one
call, on a shallow copy of the pipeline, so the caller's objects never change (not even their step state).

PNDM cannot restart: its PLMS warm-up keys on a call counter and a duplicated timestep, so a later stage
with PNDM samples with DDIM on the same training schedule instead, with a warning (stage 0 keeps PNDM).

Every stage draws its randomness (the restart's ε and a stochastic scheduler's per-step noise) from its own
CPU generator, :func:`stage_generator`: stage 0 from ``seed`` exactly as a plain pipeline call with
``torch.Generator().manual_seed(seed)``, stage r from a seed derived from (seed, r). Noise is drawn on the
CPU and moved, so a seed gives the same image on every device, and the global RNG is never used.
"""

from __future__ import annotations

import copy
import functools
import warnings
from typing import Optional

import torch
from diffusers import DDIMScheduler, PNDMScheduler

from hiresdiff.denoisers.layouts import StageGrid
from hiresdiff.sampling.noise_levels import fresh_copy

_STAGE_SEED_STRIDE = (
    0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio): stage seeds of nearby seeds do not collide
)


def stage_generator(seed: int, stage_index: int) -> torch.Generator:
    """The CPU generator of stage ``stage_index`` of a run with ``seed`` (stage 0: ``manual_seed(seed)``)."""
    derived = seed if stage_index == 0 else (seed + stage_index * _STAGE_SEED_STRIDE) % 2**64
    return torch.Generator("cpu").manual_seed(derived)


def restartable(scheduler):
    """A fresh scheduler that can start mid-grid: a copy of ``scheduler``, or DDIM in place of PNDM (warned)."""
    if isinstance(scheduler, PNDMScheduler):
        warnings.warn(
            "PNDM cannot restart mid-schedule (its PLMS warm-up counts calls): the cascade's later stages "
            "sample with DDIM on the same training schedule",
            stacklevel=3,
        )
        return DDIMScheduler.from_config(scheduler.config)
    return fresh_copy(scheduler)


class RestartedScheduler:
    """A scheduler view that samples the grid of a fresh copy of ``scheduler`` from step ``restart_step`` on
    (grid index ``begin`` = restart_step × the scheduler's order, as img2img: Heun's grid repeats timesteps).

    ``grid``: a flow stage's :class:`~hiresdiff.denoisers.layouts.StageGrid`, whose arguments every ``set_timesteps``
    call gets in place of the pipeline's own (``sigmas`` and ``mu``: the stage's grid as the sampling core computed
    it) and whose static shift the copy takes. The view's ``set_timesteps`` has the copy's signature, so pipelines
    that inspect it (``retrieve_timesteps``: does it take ``sigmas``?) see the real scheduler's."""

    def __init__(self, scheduler, restart_step: int, grid: Optional[StageGrid] = None):
        self.inner = restartable(scheduler)
        self.begin = restart_step * self.inner.order
        self.grid = dict(grid.arguments) if grid is not None else {}
        if grid is not None:
            grid.prepare(self.inner)

        @functools.wraps(self.inner.set_timesteps)
        def set_timesteps(*args, **kwargs):
            self.inner.set_timesteps(*args, **{**kwargs, **self.grid})
            self.set_begin_index(0)

        self.set_timesteps = set_timesteps

    def set_begin_index(self, begin_index: int = 0):
        """Begin ``begin_index`` steps after the restart (pipelines say 0: the restart itself)."""
        if hasattr(self.inner, "set_begin_index"):
            self.inner.set_begin_index(self.begin + begin_index)

    @property
    def timesteps(self) -> torch.Tensor:
        """The grid from the restart on (a view: the copy's own grid stays whole)."""
        return self.inner.timesteps[self.begin :]

    def __getattr__(self, name):
        if name == "inner":  # not yet set (copying): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


def stage_pipeline(pipe, scheduler):
    """A shallow copy of ``pipe`` that samples with ``scheduler``; ``pipe`` and its config are not touched."""
    staged = copy.copy(pipe)
    object.__setattr__(
        staged, "scheduler", scheduler
    )  # not DiffusionPipeline.__setattr__: it would edit the shared config
    return staged
