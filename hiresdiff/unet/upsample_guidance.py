"""Upsample Guidance on a UNet, as a diffusers hook (attached by
:func:`hiresdiff.sampling.family_parts.apply_upsample_guidance`, through the UNet adapter :mod:`hiresdiff.unet.parts`).

``apply_upsample_guidance(pipe, UpsampleGuidanceConfig(...))`` turns every UNet call of the pipeline into
eq. 4 of the paper,

    ε̃(x_t, t) = ε(x_t, t) + w_t · U[ ε(D[x_t]/√P, τ)/√k − D[ε(x_t, t)] ],

computed by :func:`hiresdiff.methods.upsample_guidance.guided_prediction` in the UNet's own prediction
type; ``remove_upsample_guidance(pipe)`` puts the UNet back as it was. The hook

* reads t from the UNet's ``timestep`` argument — never counts calls — and places it on the step fraction of the
  scheduler's grid (η's window, :mod:`hiresdiff.core.step_fraction`), so it works with any scheduler,
  including second-order ones (Heun) that call the UNet twice per step, img2img's shortened schedules and
  interrupted runs;
* works on what the UNet receives: the pipeline's CFG batch (UG is linear, so guiding both CFG halves and
  then combining equals combining then guiding, as long as ``guidance_rescale`` is 0 — with it, UG is
  applied before the rescale) and schedulers' scaled inputs (x/√(σ²+1) is the VP x_t);
* gives the low-res call the same conditioning, see :mod:`hiresdiff.unet.lowres_call`;
* skips the low-res call when w_t = 0 (eq. 5) and then calls the UNet with its arguments untouched;
* reads ``alphas_cumprod`` and ``prediction_type`` from the scheduler at every call, so a pipeline's
  scheduler can be swapped after ``apply``; a bare UNet needs ``scheduler=``;
* keeps nothing between calls: an exception inside the UNet leaves no state behind.

For large outputs the VAE decode, not UG, dominates memory: call ``pipe.vae.enable_tiling()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

import torch

from hiresdiff.core.resample import axis_factors
from hiresdiff.denoisers.registry import DenoiserFamily
from hiresdiff.hooks.base import DenoiserCallHook
from hiresdiff.hooks.call_context import scheduler_clock
from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig, nested_guided_prediction
from hiresdiff.unet.lowres_call import check_latent_size, lowres_conditioning


def scheduler_schedule(scheduler) -> tuple[torch.Tensor, str]:
    """(ᾱ on the CPU, prediction_type) of a DDPM-family diffusers scheduler; ``ValueError`` for others."""
    alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)
    if alphas_cumprod is None:
        raise ValueError(
            f"{type(scheduler).__name__} has no alphas_cumprod: Upsample Guidance needs a scheduler of a "
            "VP (DDPM-trained) model, e.g. DDIM, Euler, Euler a, DPM-Solver++, UniPC, LCM or Heun"
        )
    return torch.as_tensor(alphas_cumprod).cpu(), scheduler.config.prediction_type


class UpsampleGuidanceHook(DenoiserCallHook):
    """Replaces a UNet's forward by eq. 4: its own call plus, where w_t ≠ 0, the trained-resolution call.

    Holds only settings: the guidance levels (one, or several nested ones, outermost first), where to find the
    scheduler, the UNet family and the SDXL time-id choice.
    """

    def __init__(
        self,
        levels: Sequence[UpsampleGuidanceConfig],
        scheduler_source: Callable[[], Any],
        family: DenoiserFamily,
        time_ids: str,
        vae_scale_factor: Optional[int],
    ):
        super().__init__()
        self.levels = list(levels)
        self.scheduler_source = scheduler_source
        self.clock = scheduler_clock(scheduler_source, scheduler_source().config.num_train_timesteps)
        self.family = family
        self.time_ids = time_ids
        self.vae_scale_factor = vae_scale_factor

    def new_forward(self, module, *args, **kwargs):
        arguments = self.arguments(module, args, kwargs)
        sample, timestep = arguments["sample"], arguments["timestep"]
        shape = sample.shape
        for level in self.levels:
            check_latent_size(shape, level.factor, self.vae_scale_factor)
            shape = (*shape[:2], *(n // f for n, f in zip(shape[2:], axis_factors(level.factor, len(shape)))))
        alphas_cumprod, prediction_type = scheduler_schedule(self.scheduler_source())
        weight = self.levels[0].weight(self.clock(torch.as_tensor(timestep, dtype=torch.float32)))
        if not torch.any(weight != 0):
            return self.fn_ref.original_forward(*args, **kwargs)

        def unet_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            factor = tuple(n // m for n, m in zip(sample.shape[2:], x.shape[2:]))
            lowres = (
                lowres_conditioning(arguments, sample.shape, factor, self.time_ids) if x.shape != sample.shape else {}
            )
            call = {**arguments, **lowres, "sample": x.to(sample.dtype), "timestep": t, "return_dict": False}
            # the UNet pops T2I-Adapter residuals off their list: give every call a list of its own
            call = {name: list(v) if isinstance(v, list) else v for name, v in call.items()}
            return self.fn_ref.original_forward(**call)[0].float()

        # the ε/v/x₀ conversions and eq. 4 in float32 (in bf16 they cost 2.45 % at t = 999), cast back once
        guided = nested_guided_prediction(
            unet_fn, sample.float(), timestep, alphas_cumprod, self.levels, prediction_type, self.clock
        ).to(sample.dtype)
        return self.family.output_cls(sample=guided) if arguments.get("return_dict", True) else (guided,)
