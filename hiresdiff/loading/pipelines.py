"""Loading a diffusers pipeline by folder or hub id and running a recipe on it: the CLI's ``--model`` path.

``DiffusionPipeline.from_pretrained`` (a hub id or a local folder), on the best device and dtype, then
:func:`hiresdiff.sampling.generate.generate`, which attaches the recipe's parts for the call
and removes them again, even when the call fails.
"""

from __future__ import annotations

import importlib
import re
import socket
import urllib.parse
from pathlib import Path
from typing import Any, Optional

import huggingface_hub
import torch
from diffusers import DiffusionPipeline

from hiresdiff.checks import cannot_load
from hiresdiff.denoisers.registry import check_model_index
from hiresdiff.loading.low_memory import (
    apply_offload,
    check_offload,
    check_quant,
    load_gguf_denoiser,
    pick_device,
    pipeline_quantization,
    warn_nothing_to_offload,
)
from hiresdiff.models import MODEL_NAMES, ModelSettings, model_settings, resolve_model
from hiresdiff.recipe import Recipe
from hiresdiff.sampling.generate import generate


def check_device(device: str) -> str:
    """``device`` if this machine has it; ``ValueError`` naming ``--device`` otherwise (before any model loads)."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ValueError(f"--device must be a torch device such as cpu, cuda, cuda:1 or mps; got {device!r}") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(kind, False):
        have = ", ".join(k for k, v in available.items() if v)
        raise ValueError(f"--device {device}: this machine has no {kind} device (it has: {have})")
    return device


def pick_dtype(device: str) -> torch.dtype:
    """fp16 on CUDA; fp32 elsewhere (CPU kernels are slow or missing in fp16, MPS fp16 is unreliable)."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def configure_vae_tiling(pipe, vae_tiling: Optional[bool]) -> None:
    """``True``: ``pipe.vae.enable_tiling()`` for good (``ValueError`` for a pipeline without a VAE). Otherwise nothing:
    :func:`~hiresdiff.sampling.generate.generate` tiles outputs above 1536² pixels itself."""
    if vae_tiling:
        if getattr(pipe, "vae", None) is None:
            raise ValueError(f"vae_tiling=True, but {type(pipe).__name__} has no VAE")
        pipe.vae.enable_tiling()


def is_hub_id(model: str) -> bool:
    """Whether ``model`` names a hub repository (``owner/name``) rather than a short name or a local folder (an
    absolute or relative path that exists, or any path with more than one part)."""
    return re.fullmatch(r"[\w.-]+/[\w.-]+", str(model)) is not None and not Path(model).exists()


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub accepts a connection within ``timeout`` seconds (never in offline mode).

    Asked once before a hub id is loaded: without it, a machine without network retries every file request with
    back-off for about two minutes before failing; with it, such a machine uses the cache alone and says so at once."""
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return False
    endpoint = urllib.parse.urlsplit(huggingface_hub.constants.ENDPOINT)
    try:
        with socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def pipeline_config(model: str, local_files_only: bool = False) -> dict:
    """The ``model_index.json`` of a pipeline folder, cached hub id or short name
    (:data:`~hiresdiff.models.MODEL_NAMES`);
    ``local_files_only``: from the Hugging Face cache alone.

    Raises:
        FileNotFoundError: in one line naming ``model`` when it is neither a pipeline folder nor a hub id that
            can be fetched or found in the Hugging Face cache (diffusers' own message spans several lines).
    """
    try:
        if "/" not in str(model) and model not in MODEL_NAMES and not Path(model).exists():
            raise OSError("neither a folder, a short name nor a hub id (owner/name)")  # asking the hub is pointless
        return DiffusionPipeline.load_config(resolve_model(model), local_files_only=local_files_only)
    except OSError:
        if local_files_only and is_hub_id(model):
            raise FileNotFoundError(
                f"model {model!r} is not in the Hugging Face cache and the hub cannot be reached "
                "(no network, or HF_HUB_OFFLINE is set): download it on a machine with network, "
                "or pass a local pipeline folder"
            ) from None
        raise FileNotFoundError(
            f"model {model!r} is neither a short name ({', '.join(MODEL_NAMES)}), a diffusers "
            "pipeline folder (with model_index.json) nor a hub id that can be downloaded or found "
            "in the Hugging Face cache"
        ) from None


def load_pipeline(
    model: str,
    *,
    device: Optional[str] = None,
    dtype: Optional[torch.dtype] = None,
    needs_unet: bool = True,
    progress: bool = True,
    offload: str = "none",
    quant: str = "none",
    gguf: Optional[str | Path] = None,
) -> tuple[Any, ModelSettings]:
    """``DiffusionPipeline.from_pretrained(model)`` (a folder, hub id or short name such as ``"emoji-latent"``) on
    ``device`` (default :func:`pick_device`) in ``dtype`` (default :func:`pick_dtype`), and its
    :class:`~hiresdiff.models.ModelSettings` (pass ``settings.arguments(pipe)`` to :func:`hiresdiff.generate`).

    A missing ``model`` is refused (``FileNotFoundError``, :func:`pipeline_config`), one that does not load (a broken
    config, a truncated weights file) by a one-line ``ValueError`` naming it; with ``needs_unet`` a pipeline without
    a supported UNet is refused (``ValueError``) from its ``model_index.json``, before any weights load. A FLUX
    pipeline's ``default_sample_size`` (its own setting, which ``FluxPipeline`` fixes at 128 whatever the weights) is
    set from the settings' ``trained_size``, so that its plain call makes the size its weights know.

    ``offload`` and ``quant`` / ``gguf`` run it in less device memory (:mod:`hiresdiff.loading.low_memory`: CPU
    offload onto ``device``; the denoiser's weights quantized, or read from a GGUF single file); each is checked, and
    its package looked for, before any weights load."""
    check_offload(offload)
    check_quant(quant, gguf)
    offline = is_hub_id(model) and not hub_reachable()
    model_index = pipeline_config(model, local_files_only=offline)
    if needs_unet:
        check_model_index(model_index)
    device = check_device(device) if device else pick_device()
    dtype = dtype or pick_dtype(device)
    denoiser_name = next((name for name in ("transformer", "unet") if name in model_index), None)
    parts = {}
    if gguf is not None:
        library, class_name = model_index[denoiser_name]
        denoiser_class = getattr(importlib.import_module(library), class_name)
        parts[denoiser_name] = load_gguf_denoiser(gguf, denoiser_class, resolve_model(model), denoiser_name, dtype)
    try:
        pipe = DiffusionPipeline.from_pretrained(
            resolve_model(model),
            dtype=dtype,
            local_files_only=offline,
            quantization_config=pipeline_quantization(quant, denoiser_name),
            **parts,
        )
    except Exception as error:  # a broken config or a truncated weights file: one line naming the model
        raise cannot_load("model", model, error) from None
    offloaded = False  # else the offload hooks move each model onto the device when it runs
    if offload != "none" and torch.device(device).type == "cpu":
        warn_nothing_to_offload(offload)
    elif offload != "none":
        offloaded = apply_offload(pipe, offload, torch.device(device))
    if not offloaded:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=not progress)
    settings = model_settings(model)
    if settings.trained_size is not None and hasattr(pipe, "default_sample_size"):
        pipe.default_sample_size = settings.trained_size // pipe.vae_scale_factor
    return pipe, settings


def generate_from_folder(
    model: str,
    prompt: str,
    height: int,
    width: int,
    *,
    recipe: Optional[Recipe] = None,
    steps: int = 30,
    seed: int = 0,
    guidance_scale: Optional[float] = None,
    device: Optional[str] = None,
    dtype: Optional[torch.dtype] = None,
    num_frames: Optional[int] = None,
    negative_prompt: Optional[str] = None,
    vae_tiling: Optional[bool] = None,
    progress: bool = True,
) -> list:
    """Generate with the pipeline at ``model`` at ``height``×``width``; return PIL images (or a video's frames).

    Args:
        model: a diffusers pipeline folder or hub id (:func:`load_pipeline`).
        recipe: the method (:class:`~hiresdiff.recipe.Recipe`), or ``None`` for plain sampling at that size.
        steps, seed, guidance_scale, negative_prompt: the pipeline's own arguments (``guidance_scale`` ``None``: the
            model folder's recommended one, else 7.5, :meth:`~hiresdiff.models.ModelSettings.arguments`);
            the seed drives a CPU
            generator, so a seed gives the same noise on every device.
        device / dtype: default :func:`pick_device` / :func:`pick_dtype`.
        num_frames: frames of a video pipeline (AnimateDiff); leave ``None`` for images.
        vae_tiling: ``True`` tiles the VAE, ``False`` never, ``None`` above 1536² pixels.
        progress: show the pipeline's progress bar.

    Raises:
        ValueError: before any weights load when a recipe is asked for a pipeline without a supported UNet;
            before sampling for sizes the recipe cannot make (see :func:`~hiresdiff.sampling.generate.generate`).
    """
    pipe, settings = load_pipeline(model, device=device, dtype=dtype, needs_unet=recipe is not None, progress=progress)
    configure_vae_tiling(pipe, vae_tiling)
    return generate(
        pipe,
        prompt,
        height=height,
        width=width,
        recipe=recipe,
        steps=steps,
        seed=seed,
        num_frames=num_frames,
        vae_tiling=vae_tiling,
        **settings.arguments(pipe, guidance_scale, negative_prompt),
    )
