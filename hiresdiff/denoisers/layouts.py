"""What differs between the flow-matching transformers (FLUX.1, Qwen-Image, SD3/3.5, Wan 2.x) and the UNets, for the
sampling core (Qwen-Image is FLUX's layout with its own packing calls and ``img_shapes``: :class:`QwenImageLayout`;
Wan's video latents are SD3's unpacked grid with a frame axis: :class:`WanLayout`).

Both predict the rectified-flow velocity v = ε − x₀ for x_t = (1 − σ)·x₀ + σ·ε and sample with
``FlowMatchEulerDiscreteScheduler`` (or another flow-matching scheduler), whose ``timesteps`` are σ·1000. What
differs, and what each :class:`TransformerLayout` answers:

* **latents**: ``FluxPipeline`` packs 2×2 latent pixels into one token, (B, h/2·w/2, 4C), also for ``latents=``
  and ``output_type="latent"``; SD3 keeps (B, C, h, w). The sampling core works on (B, C, h, w) grids
  (:meth:`to_grid`, :meth:`from_grid`).
* **the transformer's time**: FLUX's pipeline passes σ (timestep/1000), SD3's σ·1000 (:attr:`time_unit`).
* **sizes**: a FLUX size must divide by 2 latent pixels (the packing), SD3's by its ``patch_size``
  (:meth:`size_multiple`). The trained size: SD3's transformer says it (``sample_size``); FLUX's pipeline fixes
  ``default_sample_size = 128`` whatever the weights (FLUX.1: 1024² pixels), so it is read from the pipeline
  (a folder of ours sets it when loaded by name) and a caller may override it.
* **the grid of a stage**: FLUX's pipeline samples σ on ``linspace(1, 1/N, N)`` shifted by μ from the token
  count (``calculate_shift`` over the scheduler's ``base/max_image_seq_len`` and ``base/max_shift``); SD3's
  shifts by μ only when its scheduler has ``use_dynamic_shifting`` (else by its static ``shift``).
  :meth:`stage_grid` gives a stage's grid under a shift policy (:mod:`hiresdiff.methods.flow_shift`; its token
  count is (h/m)·(w/m) with m = :meth:`size_multiple`): the ``set_timesteps`` arguments and, for a static-shift
  scheduler, its shift, so that the sampling core knows every σ of a stage before the call and hands the
  pipeline exactly that grid.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import FluxPipeline, QwenImagePipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift as pipeline_shift

from hiresdiff.methods.flow_shift import Shift, policy_value


def calculate_shift(image_seq_len: int, config: Mapping[str, Any], max_shift_default: float) -> float:
    """FLUX's μ by the pipelines' own ``calculate_shift``: linear in the token count between (base_image_seq_len,
    base_shift) and (max_image_seq_len, max_shift), extrapolated beyond, with the pipelines' defaults where the
    scheduler config lacks a value (256, 4096, 0.5, and ``max_shift_default``: FLUX 1.15, SD3 1.16)."""
    return pipeline_shift(
        image_seq_len,
        config.get("base_image_seq_len", 256),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5),
        config.get("max_shift", max_shift_default),
    )


@dataclass(frozen=True)
class StageGrid:
    """A flow stage's σ grid: the arguments its scheduler's ``set_timesteps`` gets (``sigmas``, ``mu``) and, for a
    scheduler with a static shift, the shift it samples with (``None``: its own)."""

    arguments: dict = field(default_factory=dict)
    shift: Optional[float] = None

    def prepare(self, scheduler) -> None:
        """Give ``scheduler`` (a fresh copy of the pipeline's) this grid's static shift."""
        if self.shift is None:
            return
        if "flow_shift" in scheduler.config and not hasattr(scheduler, "set_shift"):  # UniPC, DPM-Solver on flow sigmas
            scheduler.register_to_config(flow_shift=self.shift)
            return
        if not hasattr(scheduler, "set_shift"):
            raise ValueError(
                f"shift: {type(scheduler).__name__} has a static shift that cannot be changed; use shift='pipeline'"
            )
        scheduler.set_shift(self.shift)


def shift_grid(scheduler, tokens: int, trained_tokens: int, shift: Shift, max_shift_default: float) -> StageGrid:
    """The grid arguments of ``shift`` for a stage of ``tokens`` (trained: ``trained_tokens``): μ for a dynamically
    shifting scheduler (its exponential or linear time shift), else its static shift (``None`` where it is its own)."""
    config = scheduler.config
    if config.get("use_dynamic_shifting"):
        exponential = config.get("time_shift_type", "exponential") == "exponential"
        mu = policy_value(
            shift, tokens, trained_tokens, lambda n: calculate_shift(n, config, max_shift_default), exponential
        )
        return StageGrid({"mu": mu})
    own = float(config.get("flow_shift", config.get("shift", 1.0)))  # UniPC/DPM-Solver on flow sigmas: flow_shift
    value = policy_value(shift, tokens, trained_tokens, lambda n: own, exponential=False)
    return StageGrid({}, None if value == own else value)


class FluxLayout:
    """``FluxTransformer2DModel`` in ``FluxPipeline``: 2×2-packed latent tokens, time σ, position ids ``img_ids``."""

    time_unit = 1.0
    input_name = "hidden_states"

    def size_multiple(self, config: Mapping[str, Any]) -> int:
        return 2 * config.get("patch_size", 1)

    def position_reach(self, transformer) -> int:
        """Rotary positions extend to any size: 0 = no limit."""
        return 0

    def trained_size(self, transformer, pipe=None) -> tuple[int, int]:
        if pipe is None or not getattr(pipe, "default_sample_size", None):
            raise ValueError(
                "a FLUX or Qwen-Image transformer's trained size is its pipeline's default_sample_size: pass the "
                "pipeline, "
                "or trained_size="
            )
        return (pipe.default_sample_size, pipe.default_sample_size)

    def to_grid(self, latents: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Packed (B, h/2·w/2, 4C) → (B, C, h, w) for a latent ``size`` (h, w): the pipeline's own unpacking."""
        return FluxPipeline._unpack_latents(latents, size[0], size[1], vae_scale_factor=1)

    def from_grid(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) → packed (B, h/2·w/2, 4C): the pipeline's own packing."""
        return FluxPipeline._pack_latents(z, *z.shape)

    def grid_size(self, arguments: Mapping[str, Any]) -> tuple[int, int]:
        """The latent (h, w) of a transformer call, from its ``img_ids`` (row, column per token, row by row): the
        tokens of the first row are the width. Counted, not read from the largest id: FluxPipeline makes the ids in
        the prompt's dtype, and bf16 holds integers exactly only up to 256 (at 8192² the last row's 511 reads 512)."""
        ids = arguments["img_ids"]
        ids = ids[0] if ids.ndim == 3 else ids
        width = int((ids[:, 1] == ids[0, 1]).sum())
        return ids.shape[0] // width * 2, width * 2

    def input_grid(self, arguments: Mapping[str, Any]) -> torch.Tensor:
        return self.to_grid(arguments["hidden_states"], self.grid_size(arguments))

    def with_input(self, arguments: Mapping[str, Any], z: torch.Tensor) -> dict[str, Any]:
        """``arguments`` for the grid ``z`` (B, C, h, w): its tokens and their position ids."""
        ids = arguments["img_ids"]
        img_ids = FluxPipeline._prepare_latent_image_ids(
            None, z.shape[-2] // 2, z.shape[-1] // 2, ids.device, ids.dtype
        )
        return {**arguments, "hidden_states": self.from_grid(z), "img_ids": img_ids}

    def stage_grid(self, scheduler, steps: int, tokens: int, trained_tokens: int, shift: Shift) -> StageGrid:
        """The grid of a stage of ``steps`` steps over ``tokens`` image tokens under ``shift``: with
        ``shift="pipeline"`` exactly what ``FluxPipeline`` passes to ``set_timesteps`` (its σ and its μ)."""
        config = scheduler.config
        sigmas = {} if config.get("use_flow_sigmas") else {"sigmas": np.linspace(1.0, 1 / steps, steps)}
        grid = shift_grid(scheduler, tokens, trained_tokens, shift, 1.15)
        if "mu" not in grid.arguments:  # FluxPipeline passes its μ also to a static scheduler, which ignores it
            grid = StageGrid({"mu": calculate_shift(tokens, config, 1.15)}, grid.shift)
        return StageGrid({**sigmas, **grid.arguments}, grid.shift)


class QwenImageLayout(FluxLayout):
    """``QwenImageTransformer2DModel`` in ``QwenImagePipeline``: FLUX's 2×2-packed tokens, time σ and grid (its
    pipeline computes μ as FLUX's), the packing being the transformer's own ``patch_size``; the token grid travels as
    ``img_shapes`` [[(1, h/2, w/2)]] per sample instead of position ids, and its VAE's latents carry a frame axis of 1
    that the grid drops."""

    def size_multiple(self, config: Mapping[str, Any]) -> int:
        return config.get("patch_size", 2)

    def to_grid(self, latents: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Packed (B, h/2·w/2, 4C) → (B, C, h, w): the pipeline's own unpacking, without its frame axis."""
        return QwenImagePipeline._unpack_latents(latents, size[0], size[1], vae_scale_factor=1)[:, :, 0]

    def from_grid(self, z: torch.Tensor) -> torch.Tensor:
        return QwenImagePipeline._pack_latents(z, *z.shape)

    def grid_size(self, arguments: Mapping[str, Any]) -> tuple[int, int]:
        _, h, w = arguments["img_shapes"][0][0]
        return 2 * h, 2 * w

    def with_input(self, arguments: Mapping[str, Any], z: torch.Tensor) -> dict[str, Any]:
        shapes = [[(1, z.shape[-2] // 2, z.shape[-1] // 2)]] * z.shape[0]
        return {**arguments, "hidden_states": self.from_grid(z), "img_shapes": shapes}


class SD3Layout:
    """``SD3Transformer2DModel`` in ``StableDiffusion3Pipeline``: (B, C, h, w) latents, time σ·1000, patches of
    ``patch_size`` with a learned absolute position embedding cropped from a ``pos_embed_max_size`` grid."""

    time_unit = 1000.0
    input_name = "hidden_states"

    def size_multiple(self, config: Mapping[str, Any]) -> int:
        return config["patch_size"]

    def trained_size(self, transformer, pipe=None) -> tuple[int, int]:
        size = transformer.config.sample_size
        return (size, size)

    def position_reach(self, transformer) -> int:
        """The largest latent side the position embedding covers without interpolation (its grid × the patch)."""
        config = transformer.config
        return config.pos_embed_max_size * config.patch_size if config.get("pos_embed_max_size") else 0

    def to_grid(self, latents: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return latents

    def from_grid(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def grid_size(self, arguments: Mapping[str, Any]) -> tuple[int, int]:
        return tuple(arguments["hidden_states"].shape[-2:])

    def input_grid(self, arguments: Mapping[str, Any]) -> torch.Tensor:
        return arguments["hidden_states"]

    def with_input(self, arguments: Mapping[str, Any], z: torch.Tensor) -> dict[str, Any]:
        return {**arguments, "hidden_states": z}

    def stage_grid(self, scheduler, steps: int, tokens: int, trained_tokens: int, shift: Shift) -> StageGrid:
        """The grid of a stage under ``shift``: with ``shift="pipeline"`` what ``StableDiffusion3Pipeline`` does (μ
        when the scheduler shifts dynamically, else its static shift)."""
        return shift_grid(scheduler, tokens, trained_tokens, shift, 1.16)


class WanLayout(SD3Layout):
    """``WanTransformer3DModel`` in ``WanPipeline`` (Wan 2.1/2.2): (B, C, F, h, w) video latents, unpacked (the
    transformer patchifies them by ``patch_size`` (1, 2, 2)), time σ·1000, rotary positions on three axes (frame, row,
    column; ``WanRotaryPosEmbed``, a table of ``rope_max_seq_len`` positions per axis). Its pipeline samples with the
    scheduler's own grid (``set_timesteps(steps)``: UniPC or Euler on flow sigmas with a static ``flow_shift`` /
    ``shift``), so a stage's grid is SD3's static-shift one (``stage_grid``): its own shift under ``"pipeline"`` and
    ``"trained"`` (Wan's pipeline does not shift by size), the policy's value otherwise, tokens counted per frame. The
    trained size is the pipeline's default ``height``×``width`` (Wan: 480×832) in latents."""

    def size_multiple(self, config: Mapping[str, Any]) -> int:
        return config["patch_size"][1]

    def trained_size(self, transformer, pipe=None) -> tuple[int, int]:
        if pipe is None:
            raise ValueError(
                "a Wan transformer's trained size is its pipeline's default height and width: pass the "
                "pipeline, or trained_size="
            )
        defaults = inspect.signature(type(pipe).__call__).parameters
        factor = pipe.vae_scale_factor_spatial
        return (defaults["height"].default // factor, defaults["width"].default // factor)

    def grid_size(self, arguments: Mapping[str, Any]) -> tuple[int, int, int]:
        """The call's latent (frames, h, w)."""
        return tuple(arguments["hidden_states"].shape[-3:])

    def position_reach(self, transformer) -> int:
        """The rotary table covers ``rope_max_seq_len`` tokens per axis: that many patches of latents."""
        return transformer.config.rope_max_seq_len * transformer.config.patch_size[1]

    @staticmethod
    def token_weights(timestep: torch.Tensor, size: Sequence[int], new_size: Sequence[int]) -> torch.Tensor:
        """Wan 2.2 TI2V's time per token (``expand_timesteps``: (B, F·h/p·w/p), 0 on a conditioning frame, the
        step's time elsewhere) on the latent grid ``size`` (F, h, w), as weights in [0, 1] (time / the call's largest)
        averaged over the tokens each token of the grid ``new_size`` covers: (B, F·h'/p·w'/p), in the pipeline's
        order (frame, row, column)."""
        frames, h, w = size
        tokens = timestep.shape[1] // frames
        patch = round((h * w / tokens) ** 0.5)
        weights = timestep.float() / timestep.float().amax(1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        grid = weights.view(-1, frames, h // patch, w // patch)
        return F.adaptive_avg_pool2d(grid, (new_size[-2] // patch, new_size[-1] // patch)).flatten(1)
