"""Restart by inversion (``CascadeConfig(inversion=γ)``): a later stage starts from the deterministic inversion of its
pivot to the restart step instead of from fresh noise (PixelRush's restart; DDIM inversion, Song et al. 2021 §4.3,
written for every scheduler form).

The pipeline itself runs the inversion, so its prompt encoding, guidance, SDXL's added conditions, FLUX's packing and
the stage's per-call parts are those of the stage: :class:`InvertingScheduler` is a scheduler view that walks the
stage's own grid backward, from the clean pivot to the restart step K, one model call per step the stage then runs.
With i_j = K + j·order (j < m) the stage's step starts, call j sees the state at level s_j (the clean pivot first,
a = 1, b = 0, at the timestep of the stage's last step i_{m−1}; then i_{m−1}, …, i_1) and moves it to the next
noisier level n_j (i_{m−1}, …, i_0 = K); its last state is the inversion (``state``, read after the call: the
pipeline's own output of it may be post-processed, a pixel pipeline's clamped):

    x̂₀ = (x − b_s·ε̂)/a_s,   x ← a_n·x̂₀ + b_n·ε̂,

with x = a·x₀ + b·ε each level's form (:class:`~hiresdiff.sampling.noise_levels.NoiseLevels`). ε̂ is read from the
model's output at the level of the timestep it was given: for VP and σ-form schedulers from the prediction type at the
VP-equivalent input x/√(a²+b²), ᾱ = a²/(a²+b²) (what their ``scale_model_input`` hands the model), for flow matching
from the velocity v = ε − x₀: ε̂ = x + a·v. The sampling core then noises the pivot with the inversion's implied noise
mixed with fresh ε (:func:`~hiresdiff.methods.self_cascade.injected_noise`). EDM schedulers (preconditioned outputs)
are refused by the plan.
"""

from __future__ import annotations

import functools
import math

import torch
from diffusers.schedulers.scheduling_utils import SchedulerOutput

from hiresdiff.core.prediction import to_epsilon
from hiresdiff.sampling.noise_levels import NoiseLevels
from hiresdiff.sampling.restart import RestartedScheduler


class InvertingScheduler:
    """A scheduler view running ``restarted``'s grid (a stage's :class:`RestartedScheduler`, whose ``levels`` these
    are) backward from the clean sample to its restart step (see the module docstring); ``flow``: a flow-matching
    model's velocity output."""

    def __init__(self, restarted: RestartedScheduler, levels: NoiseLevels, flow: bool):
        self.restarted, self.levels, self.flow = restarted, levels, flow
        starts = list(range(restarted.begin, len(levels), restarted.inner.order))  # i_0 = K, …, i_{m−1}
        self.reached = starts[::-1]
        self.at = [None, *self.reached[:-1]]  # the state's level before each call (None: the clean pivot)
        self.read = [starts[-1], *self.reached[:-1]]  # the level of the timestep each call is given
        self.calls = 0
        self.state = None  # the walk's latest state (after the last call: the inversion), in the pipeline's layout

        @functools.wraps(restarted.set_timesteps)
        def set_timesteps(*args, **kwargs):
            restarted.set_timesteps(*args, **kwargs)
            self.calls = 0

        self.set_timesteps = set_timesteps

    init_noise_sigma = 1.0
    order = 1

    def set_begin_index(self, begin_index: int = 0):
        """The walk has its own order; what a pipeline asks is ignored."""

    @property
    def timesteps(self) -> torch.Tensor:
        return self.restarted.inner.timesteps[self.read]

    def _level(self, index) -> tuple[float, float]:
        return (1.0, 0.0) if index is None else self.levels.at(index)

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """The model's input at the call's level: x/√(a²+b²) (VP: x; σ form: x/√(1+σ²)); flow models take x."""
        if self.flow:
            return sample
        a, b = self._level(self.read[self.calls])
        return sample / math.sqrt(a * a + b * b)

    def _epsilon(self, output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        a, b = self._level(self.read[self.calls])
        if self.flow:
            return sample + a * output
        norm = a * a + b * b
        alpha_bar = torch.tensor(a * a / norm, device=sample.device)
        return to_epsilon(output, sample / math.sqrt(norm), alpha_bar, self.restarted.inner.config.prediction_type)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, *args, return_dict: bool = True, **kw):
        """One step of the walk: the state moved from its level to the next noisier one (the module docstring)."""
        eps = self._epsilon(model_output.float(), sample.float())
        a, b = self._level(self.at[self.calls])
        x0 = (sample.float() - b * eps) / a
        moved = self.levels.noised(x0, eps, self.reached[self.calls]).to(sample.dtype)
        self.calls, self.state = self.calls + 1, moved
        return SchedulerOutput(prev_sample=moved) if return_dict else (moved,)

    def __getattr__(self, name):
        if name == "restarted":  # not yet set (copying): no recursion
            raise AttributeError(name)
        return getattr(self.restarted.inner, name)
