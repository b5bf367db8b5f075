"""Upsample Guidance on a diffusers pipeline's UNet, as a named diffusers hook.

``apply_upsample_guidance(pipe, UpsampleGuidanceConfig(...))`` turns every UNet call of the pipeline into
eq. 4 of the paper,

    ε̃(x_t, t) = ε(x_t, t) + w_t · U[ ε(D[x_t]/√P, τ)/√k − D[ε(x_t, t)] ],

computed by :func:`hiresdiff.methods.upsample_guidance.guided_prediction` in the UNet's own prediction
type; ``remove_upsample_guidance(pipe)`` puts the UNet back as it was. The hook

* reads t from the UNet's ``timestep`` argument — never counts calls — so it works with any scheduler,
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

from typing import Any, Callable, Optional, Sequence, Union

import torch

from hiresdiff.core.resample import axis_factors
from hiresdiff.hooks.base import DenoiserCallHook, attach, attached, detach
from hiresdiff.unet.lowres_call import check_latent_size, check_time_ids, lowres_conditioning
from hiresdiff.hooks.families import DenoiserFamily, family_of, find_denoiser
from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig, nested_guided_prediction, with_family_eta

UPSAMPLE_GUIDANCE_HOOK = "upsample_guidance"


def scheduler_schedule(scheduler) -> tuple[torch.Tensor, str]:
    """(ᾱ on the CPU, prediction_type) of a DDPM-family diffusers scheduler; ``ValueError`` for others."""
    alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)
    if alphas_cumprod is None:
        raise ValueError(f"{type(scheduler).__name__} has no alphas_cumprod: Upsample Guidance needs a scheduler of a "
                         "VP (DDPM-trained) model, e.g. DDIM, Euler, Euler a, DPM-Solver++, UniPC, LCM or Heun")
    return torch.as_tensor(alphas_cumprod).cpu(), scheduler.config.prediction_type


class UpsampleGuidanceHook(DenoiserCallHook):
    """Replaces a UNet's forward by eq. 4: its own call plus, where w_t ≠ 0, the trained-resolution call.

    Holds only settings: the guidance levels (one, or several nested ones, outermost first), where to find the
    scheduler, the UNet family and the SDXL time-id choice.
    """

    def __init__(self, levels: Sequence[UpsampleGuidanceConfig], scheduler_source: Callable[[], Any],
                 family: DenoiserFamily, time_ids: str, vae_scale_factor: Optional[int]):
        super().__init__()
        self.levels = list(levels)
        self.scheduler_source = scheduler_source
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
        weight = self.levels[0].weight(torch.as_tensor(timestep, dtype=torch.float32).cpu(), len(alphas_cumprod))
        if not torch.any(weight != 0):
            return self.fn_ref.original_forward(*args, **kwargs)

        def unet_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            factor = tuple(n // m for n, m in zip(sample.shape[2:], x.shape[2:]))
            lowres = lowres_conditioning(arguments, sample.shape, factor, self.time_ids) if x.shape != sample.shape else {}
            call = {**arguments, **lowres, "sample": x.to(sample.dtype), "timestep": t, "return_dict": False}
            # the UNet pops T2I-Adapter residuals off their list: give every call a list of its own
            call = {name: list(v) if isinstance(v, list) else v for name, v in call.items()}
            return self.fn_ref.original_forward(**call)[0].float()

        # the ε/v/x₀ conversions and eq. 4 in float32 (in bf16 they cost 2.45 % at t = 999), cast back once
        guided = nested_guided_prediction(unet_fn, sample.float(), timestep, alphas_cumprod, self.levels,
                                          prediction_type).to(sample.dtype)
        return self.family.output_cls(sample=guided) if arguments.get("return_dict", True) else (guided,)


def apply_upsample_guidance(pipe_or_unet, config: Union[UpsampleGuidanceConfig, Sequence[UpsampleGuidanceConfig]],
                            scheduler=None, *,
                            sdxl_time_ids: str = "scale") -> None:
    r"""Apply Upsample Guidance (eq. 4–5) to every UNet call of a pipeline, or of a bare UNet.

    Args:
        pipe_or_unet: a diffusers pipeline with a ``unet`` (SD 1.x/2.x, SDXL, AnimateDiff, their img2img,
            ControlNet and IP-Adapter variants, LoRA-loaded or not; a pixel ``UNet2DModel`` pipeline) or
            such a UNet itself.
        config: the UG settings. ``factor`` is int m (H, W) or a tuple per trailing axis; on AnimateDiff
            (2, 1, 1) is temporal UG (more frames) and (2, 2, 2) both. A sequence of configs nests them
            (:func:`hiresdiff.methods.upsample_guidance.nested_guided_prediction`; 4× as ×2 twice).
        scheduler: where ``alphas_cumprod`` and ``prediction_type`` come from. Default for a pipeline: its
            current ``scheduler``, read at every call. Required for a bare UNet.
        sdxl_time_ids: ``"scale"`` (default) or ``"keep"``: SDXL micro-conditioning of the low-res call,
            see :mod:`hiresdiff.unet.lowres_call`.

    Raises:
        ValueError: the pipeline has no supported UNet, a bare UNet comes without a scheduler, the
            scheduler is not DDPM-family, a frame factor is given for an image UNet, or UG is already applied.

    Example:

    ```python
    >>> pipe = StableDiffusionPipeline.from_pretrained(...)
    >>> apply_upsample_guidance(pipe, UpsampleGuidanceConfig(factor=2, theta=1.0, eta=0.6))
    >>> image = pipe("a cat", height=1024, width=1024).images[0]
    >>> remove_upsample_guidance(pipe)
    ```
    """
    unet, pipe = find_denoiser(pipe_or_unet)
    if attached(unet, UPSAMPLE_GUIDANCE_HOOK) is not None:
        raise ValueError("Upsample Guidance is already applied to this UNet; call remove_upsample_guidance first")
    family = family_of(unet)
    levels = [config] if isinstance(config, UpsampleGuidanceConfig) else list(config)
    if not levels or not all(isinstance(c, UpsampleGuidanceConfig) for c in levels):
        raise ValueError(f"config must be an UpsampleGuidanceConfig or a non-empty sequence of them; got {config!r}")
    levels = [with_family_eta(level, latent=family.latent) for level in levels]
    if family.flow:  # rectified flow: σ comes from the call itself, no scheduler is read
        from hiresdiff.hooks.families import size_multiple
        from hiresdiff.transformer.upsample_guidance import FlowUpsampleGuidanceHook

        for level in levels:
            axis_factors(level.factor, 4)  # (H, W) only: ValueError for a frame factor
        attach(unet, FlowUpsampleGuidanceHook(levels, family, size_multiple(unet)), UPSAMPLE_GUIDANCE_HOOK)
        return
    if scheduler is None and pipe is None:
        raise ValueError("a bare UNet needs scheduler=: Upsample Guidance reads alphas_cumprod and prediction_type "
                         "from the scheduler that samples with it")
    scheduler_source = (lambda: scheduler) if scheduler is not None else (lambda: pipe.scheduler)
    scheduler_schedule(scheduler_source())
    for level in levels:
        if axis_factors(level.factor, 5)[0] > 1 and not family.video:
            raise ValueError(f"factor {level.factor!r} scales frames, but {type(unet).__name__} is an image UNet; "
                             "temporal Upsample Guidance needs a video UNet (AnimateDiff's UNetMotionModel)")
    check_time_ids(sdxl_time_ids)
    hook = UpsampleGuidanceHook(levels, scheduler_source, family, sdxl_time_ids, getattr(pipe, "vae_scale_factor", None))
    attach(unet, hook, UPSAMPLE_GUIDANCE_HOOK)


def remove_upsample_guidance(pipe_or_unet) -> None:
    """Remove Upsample Guidance from a pipeline's UNet (or a bare UNet); a no-op if it is not applied.

    The UNet is restored exactly: its ``forward``, and the hook registry if this hook created it, are
    deleted again when no other hook remains. Attention processors and config are never touched.
    """
    unet, _ = find_denoiser(pipe_or_unet)
    detach(unet, UPSAMPLE_GUIDANCE_HOOK)
