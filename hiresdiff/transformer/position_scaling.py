"""Position rescaling on a flow transformer's position embedding, as a diffusers hook (the transformer's analogue
of the restrained dilation, :class:`hiresdiff.methods.positions.PositionConfig`).

**FLUX** (``FluxPosEmbed``, 3 axes: text/index, row, column; θ = 10⁴): in a call at scale (s_h, s_w) above the
trained size, the row and column axes get the frequencies of :func:`hiresdiff.core.rope.scaled_rope_frequencies`
(PI, NTK or YaRN, trained lengths = the trained token grid), the first axis keeps its own; the returned
(cos, sin) are multiplied by √(logit scale) — YaRN's temperature or the entropy scaling — which multiplies
every rotated query and key by it, so every attention logit by the scale. Outside the active window, at
scale ≤ 1 (UG's trained-size calls) and outside a transformer call, the embedding's own forward runs.

**Qwen-Image** (``QwenEmbedRope``, MSRoPE: frame, row, column; text tokens on the diagonal after the image): the
same per-axis frequencies on the image's rows and columns (:class:`MultimodalRopeScalingHook`).

**Wan 2.x** (``WanRotaryPosEmbed``: frame, row, column axes, positions from 0 in patches, θ = 10⁴): the row and column
axes get the scaled frequencies, the frame axis keeps its own (a clip of the trained length: time is left alone;
:class:`VideoRopeScalingHook`).

**SD3** (``PatchEmbed`` with ``pos_embed_max_size``): the learned absolute embedding is a grid cropped at the
centre; the trained size uses the central (h₀/p)×(w₀/p) crop. Position interpolation resamples that crop
(bicubic) to the call's patch grid: every patch gets the embedding of its relative position in the trained
image. Beyond the ``pos_embed_max_size`` grid the crop does not exist, so there it interpolates at every step.

Nothing of the module is changed: removing the hook restores the embedding exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.hooks import ModelHook
from diffusers.models.embeddings import PatchEmbed
from diffusers.models.transformers.transformer_flux import FluxPosEmbed
from diffusers.models.transformers.transformer_qwenimage import QwenEmbedRope
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

from hiresdiff.core.rope import entropy_logit_scale, scaled_rope_frequencies, yarn_attention_factor
from hiresdiff.hooks.base import attach, detach
from hiresdiff.hooks.call_context import CallContextHook
from hiresdiff.methods.positions import PositionConfig

POSITIONS_HOOK = "hiresdiff_positions"


class PositionHook(ModelHook):
    """A hook on a transformer's position embedding: the recipe's ``config``, the denoiser's call ``context``, and the
    ``trained`` (h, w) grid of the embedding (FLUX's RoPE: tokens; SD3's: patches)."""

    def __init__(self, config: PositionConfig, context: CallContextHook, trained: tuple[int, int]):
        super().__init__()
        self.config, self.context, self.trained = config, context, trained


class RopeScalingHook(PositionHook):
    """Rescaled rotary frequencies for FLUX's ``FluxPosEmbed`` in calls above the trained size."""

    def new_forward(self, module, ids: torch.Tensor):
        call = self.context.current
        if call is None or max(call.scale) <= 1 or not self.config.is_active(call.progress):
            return self.fn_ref.original_forward(ids)
        pos = ids.to(torch.float64)
        cos, sin = [], []
        for axis, dim in enumerate(module.axes_dim):
            scale = max(1.0, call.scale[axis - 1]) if axis in (1, 2) else 1.0
            method = self.config.method if scale > 1 else "none"
            length = self.trained[axis - 1] if axis in (1, 2) else None
            omega = scaled_rope_frequencies(dim, scale, method, theta=module.theta, trained_length=length)
            angles = pos[:, axis, None] * omega.to(pos.device)[None, :]
            cos.append(angles.cos().repeat_interleave(2, dim=1))
            sin.append(angles.sin().repeat_interleave(2, dim=1))
        logit = self.logit_scale(call)
        amplitude = logit**0.5
        return (torch.cat(cos, -1) * amplitude).float().to(ids.device), (torch.cat(sin, -1) * amplitude).float().to(
            ids.device
        )

    def logit_scale(self, call) -> float:
        scaling = self.config.attention_scaling
        if scaling == "yarn":
            return yarn_attention_factor(PositionConfig.mean_scale(call.scale)) ** 2
        if scaling == "entropy":
            h, w = call.size[-2:]
            frames = call.size[0] if len(call.size) == 3 else 1  # a video attends over every frame's tokens
            return entropy_logit_scale(frames * (h // 2) * (w // 2), frames * self.trained[0] * self.trained[1])
        return 1.0


class MultimodalRopeScalingHook(RopeScalingHook):
    """Rescaled rotary frequencies for Qwen-Image's ``QwenEmbedRope`` (MSRoPE) in calls above the trained size.

    Its image tokens sit on a grid of (frame, row, column) positions — rows and columns centred on 0
    (i − ⌈h/2⌉) with ``scale_rope`` — and its text tokens on the diagonal after the image, from
    m = max(h//2, w//2) on all three axes. The row and column axes of the image get the frequencies of
    :func:`~hiresdiff.core.rope.scaled_rope_frequencies` (the frame axis keeps its own). The text keeps the geometry
    the model was trained with: under PI, where positions are squeezed back into the trained range, at the trained
    frequencies from m/s (the trained image's m); under NTK and YaRN, which keep positions and change frequencies, at
    the image's frequencies from m (so every image-text angle stays a function of the position difference). The
    complex frequencies are multiplied by √(logit scale), as FLUX's (cos, sin)."""

    def new_forward(self, module, video_fhw, device=None, max_txt_seq_len=None):
        call = self.context.current
        if call is None or max(call.scale) <= 1 or not self.config.is_active(call.progress):
            return self.fn_ref.original_forward(video_fhw, device=device, max_txt_seq_len=max_txt_seq_len)
        shape = video_fhw[0] if isinstance(video_fhw, list) else video_fhw
        frames, h, w = shape[0] if isinstance(shape, list) else shape
        centred = module.scale_rope
        axes = []  # per axis: (positions of the image tokens along it, unscaled ω, scaled ω)
        for axis, (dim, length) in enumerate(zip(module.axes_dim, (frames, h, w))):
            scale = max(1.0, call.scale[axis - 1]) if axis else 1.0
            method = self.config.method if scale > 1 else "none"
            trained = self.trained[axis - 1] if axis else None
            omega = scaled_rope_frequencies(dim, 1.0, "none", theta=module.theta)
            scaled = scaled_rope_frequencies(dim, scale, method, theta=module.theta, trained_length=trained)
            positions = torch.arange(length, dtype=torch.float64) - (length - length // 2 if axis and centred else 0)
            axes.append((positions, omega, scaled))
        grids = torch.meshgrid(*(positions for positions, _, _ in axes), indexing="ij")
        image = torch.cat([g.reshape(-1, 1) * scaled[None] for g, (_, _, scaled) in zip(grids, axes)], dim=1)
        start = max(h // 2, w // 2) if centred else max(h, w)
        text_positions = torch.arange(int(max_txt_seq_len), dtype=torch.float64)
        if self.config.method == "pi":
            start = max((h // 2 if centred else h) / call.scale[0], (w // 2 if centred else w) / call.scale[1])
            text = torch.cat([(start + text_positions)[:, None] * omega[None] for _, omega, _ in axes], dim=1)
        else:
            text = torch.cat([(start + text_positions)[:, None] * scaled[None] for _, _, scaled in axes], dim=1)
        amplitude = self.logit_scale(call) ** 0.5
        return tuple(
            torch.polar(torch.full_like(angles, amplitude), angles).to(torch.complex64).to(device)
            for angles in (image, text)
        )


class VideoRopeScalingHook(RopeScalingHook):
    """Rescaled rotary frequencies for Wan's ``WanRotaryPosEmbed`` in calls above the trained size: per token of the
    (frame, row, column) patch grid, the concatenated angles of its three axes, each pair's (cos, sin) repeated as the
    embedding's own table is (``repeat_interleave_real``), shaped (1, tokens, 1, head dim), times √(logit scale)."""

    THETA = 10_000.0  # WanTransformer3DModel builds its WanRotaryPosEmbed with the default θ

    def new_forward(self, module, hidden_states: torch.Tensor):
        call = self.context.current
        if call is None or max(call.scale) <= 1 or not self.config.is_active(call.progress):
            return self.fn_ref.original_forward(hidden_states)
        lengths = [n // p for n, p in zip(hidden_states.shape[2:], module.patch_size)]
        angles = []
        for axis, (dim, length) in enumerate(zip((module.t_dim, module.h_dim, module.w_dim), lengths)):
            scale = max(1.0, call.scale[axis - 1]) if axis else 1.0
            method = self.config.method if scale > 1 else "none"
            trained = self.trained[axis - 1] if axis else None
            omega = scaled_rope_frequencies(dim, scale, method, theta=self.THETA, trained_length=trained)
            along = torch.arange(length, dtype=torch.float64)[:, None] * omega[None]
            shape = [1, 1, 1, -1]
            shape[axis] = length
            angles.append(along.repeat_interleave(2, dim=1).view(shape).expand(*lengths, -1))
        angles = torch.cat(angles, dim=-1).reshape(1, -1, 1, module.attention_head_dim)
        amplitude = self.logit_scale(call) ** 0.5
        device = hidden_states.device
        return (angles.cos() * amplitude).to(device, torch.float32), (angles.sin() * amplitude).to(
            device, torch.float32
        )


class AbsolutePositionHook(PositionHook):
    """SD3's ``PatchEmbed`` with its trained-size crop interpolated to the call's patch grid (position
    interpolation)."""

    def new_forward(self, module, latent: torch.Tensor):
        call = self.context.current
        h, w = latent.shape[-2] // module.patch_size, latent.shape[-1] // module.patch_size
        beyond = max(h, w) > module.pos_embed_max_size
        if call is None or max(call.scale) <= 1 or not (beyond or self.config.is_active(call.progress)):
            return self.fn_ref.original_forward(latent)
        tokens = module.proj(latent).flatten(2).transpose(1, 2)
        if module.layer_norm:
            tokens = module.norm(tokens)
        return (tokens + interpolated_position_embedding(module, self.trained, (h, w))).to(tokens.dtype)


def interpolated_position_embedding(module, trained_patches: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """The central ``trained_patches`` crop of a ``PatchEmbed``'s embedding grid, resampled (bicubic) to ``grid``:
    (1, h·w, D)."""
    size, (h0, w0) = module.pos_embed_max_size, trained_patches
    table = module.pos_embed.reshape(1, size, size, -1)
    top, left = (size - h0) // 2, (size - w0) // 2
    crop = table[:, top : top + h0, left : left + w0].permute(0, 3, 1, 2).float()
    resized = F.interpolate(crop, size=grid, mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1).to(module.pos_embed.dtype)


def apply_positions(transformer, config: PositionConfig, context: CallContextHook) -> None:
    """Hook the transformer's position embedding (FLUX's, Qwen-Image's or Wan's rotary, SD3's absolute) to rescale it
    per ``config``."""
    if not isinstance(config, PositionConfig):
        raise ValueError(f"positions must be a PositionConfig; got a {type(config).__name__}")
    embed = position_embedding(transformer)
    h0, w0 = context.trained_size
    if isinstance(embed, FluxPosEmbed):
        attach(embed, RopeScalingHook(config, context, (h0 // 2, w0 // 2)), POSITIONS_HOOK)
    elif isinstance(embed, QwenEmbedRope):
        attach(embed, MultimodalRopeScalingHook(config, context, (h0 // 2, w0 // 2)), POSITIONS_HOOK)
    elif isinstance(embed, WanRotaryPosEmbed):
        patch = embed.patch_size
        attach(embed, VideoRopeScalingHook(config, context, (h0 // patch[1], w0 // patch[2])), POSITIONS_HOOK)
    elif isinstance(embed, PatchEmbed) and embed.pos_embed_max_size:
        if config.method != "pi" or config.attention_scaling != "none":
            raise ValueError(
                f"positions: {type(transformer).__name__} has a learned absolute position embedding, which "
                "takes only method='pi' with attention='none' (got method="
                f"{config.method!r}, attention={config.attention_scaling!r})"
            )
        attach(
            embed,
            AbsolutePositionHook(config, context, (h0 // embed.patch_size, w0 // embed.patch_size)),
            POSITIONS_HOOK,
        )
    else:
        raise ValueError(
            f"positions: {type(transformer).__name__}'s position embedding {type(embed).__name__} is not "
            "supported (FLUX's FluxPosEmbed, Qwen-Image's QwenEmbedRope, SD3's PatchEmbed with pos_embed_max_size, "
            "Wan's WanRotaryPosEmbed)"
        )


def position_embedding(transformer):
    """The transformer's position embedding module: ``pos_embed`` (FLUX, Qwen-Image, SD3) or ``rope`` (Wan)."""
    return getattr(transformer, "pos_embed", None) or getattr(transformer, "rope", None)


def remove_positions(transformer) -> None:
    embed = position_embedding(transformer)
    if embed is not None:
        detach(embed, POSITIONS_HOOK)
