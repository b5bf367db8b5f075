"""A pixel-space ``UNet2DModel`` as one more diffusers pipeline, so that it runs through the same driver.

:class:`PixelPipeline` keeps the contract of diffusers' text-to-image pipelines that the driver
(:func:`hiresdiff.sampling.generate.generate`) relies on, and nothing else: ``height``,
``width``, ``num_inference_steps``, ``num_images_per_prompt``, ``generator``, ``latents`` (multiplied by
``init_noise_sigma``), ``callback_on_step_end`` (it is given and may replace ``latents``) and ``output_type``;
its loop is the diffusers loop
(``set_timesteps`` → for t in ``timesteps``: ``scale_model_input`` → UNet → ``step``). It adds the UNet's
``class_labels`` and ``noise_size``: with ``noise_size`` = (H', W') the initial noise and the per-step
noise of schedulers that take ``variance_noise`` (SDE-DPM-Solver++) are drawn at H'×W' and reduced by
``√k·D`` (:func:`consistent_noise`), so that samples of one seed at different sizes are paired.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Optional

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput

from hiresdiff.core.noise import consistent_noise
from hiresdiff.denoisers.registry import trained_size

OUTPUT_TYPES = ("latent", "pt", "np", "pil")


class PixelPipeline(DiffusionPipeline):
    """Unconditional or class-conditional sampling with a pixel-space ``UNet2DModel`` and any scheduler.

    Output (``output_type``): ``"latent"`` or ``"pt"`` the images as a (B, C, H, W) tensor in [-1, 1] (a pixel
    model's space is the image), ``"np"`` (B, H, W, C) in [0, 1], ``"pil"`` a list of PIL images.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(
        self,
        height: Optional[int] = None,
        width: Optional[int] = None,
        num_inference_steps: int = 25,
        num_images_per_prompt: int = 1,
        generator: Optional[torch.Generator] = None,
        latents: Optional[torch.Tensor] = None,
        class_labels: Optional[torch.Tensor] = None,
        noise_size: Optional[Sequence[int]] = None,
        callback_on_step_end=None,
        output_type: str = "latent",
        return_dict: bool = True,
    ):
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}; got {output_type!r}")
        unet, scheduler = self.unet, self.scheduler
        trained_h, trained_w = trained_size(unet)
        height, width = height or trained_h, width or trained_w
        device, dtype = self._execution_device, unet.dtype  # as diffusers pipelines: also right when offloaded
        generator = generator if generator is not None else torch.Generator("cpu")
        shape = (num_images_per_prompt, unet.config.in_channels, height, width)
        if latents is None:
            latents = consistent_noise(generator, shape, noise_size)
        latents = latents.to(device=device, dtype=dtype)
        if class_labels is not None:
            class_labels = class_labels.to(device)
        scheduler.set_timesteps(num_inference_steps, device=device)
        if hasattr(scheduler, "set_begin_index"):  # index by position: Karras grids of few steps repeat timesteps
            scheduler.set_begin_index(0)
        latents = latents * scheduler.init_noise_sigma
        step_params = inspect.signature(scheduler.step).parameters
        for i, t in enumerate(self.progress_bar(scheduler.timesteps)):
            model_input = scheduler.scale_model_input(latents, t)
            prediction = unet(model_input, t, class_labels=class_labels).sample
            step_kwargs = {}
            if noise_size is not None and "variance_noise" in step_params:
                step_kwargs["variance_noise"] = consistent_noise(generator, latents.shape, noise_size).to(latents)
            elif "generator" in step_params:
                step_kwargs["generator"] = generator
            latents = scheduler.step(prediction, t, latents, **step_kwargs).prev_sample
            if callback_on_step_end is not None:
                latents = callback_on_step_end(self, i, t, {"latents": latents}).get("latents", latents)
        images = latents.clamp(-1, 1)
        if output_type in ("np", "pil"):
            images = ((images + 1) / 2).permute(0, 2, 3, 1).float().cpu().numpy()
            images = self.numpy_to_pil(images) if output_type == "pil" else images
        return ImagePipelineOutput(images=images) if return_dict else (images,)
