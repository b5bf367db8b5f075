"""Scale fusion (FreeScale, "Scale Fusion") as an attention processor on every spatial self-attention.

    h_fusion = G(h_local) + (h_global − G(h_global))

``h_global`` is the wrapped processor's own output. ``h_local`` is the same layer's attention computed
independently inside windows of the trained token grid (the layer's grid at the trained size, i.e. its
grid divided by the call's scale per axis), stride half a window, overlaps averaged; interior windows
are jittered by a seeded offset of up to window/8 (:func:`hiresdiff.methods.freescale.window_starts`).
G is a 2-D Gaussian blur over the token grid, kernel 2s − 1 and σ = 1 by default, replicate padding.

The local branch follows diffusers' ``AttnProcessor2_0`` step by step with the layer's own modules, with
two deliberate differences from cropping the input and calling the processor per window: the
normalisations that pool over tokens (``group_norm`` of ``UNet2DModel`` attention blocks, ``spatial_norm``)
and the projections run once on the whole grid — a window sees the same normalised features as the
global attention, and Q, K, V are not recomputed for overlapping tokens — and the affine output
projection runs once on the averaged windows (an average of affine images is the affine image of the
average). Windows go through ``scaled_dot_product_attention`` in batches of ``windows_per_batch``
windows, so the extra memory is one batch, whatever the number of windows.

Selected: every ``Attention`` that is not cross-attention, outside AnimateDiff's ``motion_modules``
(temporal attention keeps its processor): ``attn1`` of the spatial transformer blocks of
``UNet2DConditionModel``/``UNetMotionModel`` and the attention of ``UNet2DModel``'s Attn blocks and mid
block. The processor returns the wrapped processor's output untouched — bit for bit, without computing
the local branch — outside a UNet call, at scale ≤ 1 (one window covers the grid), and when the call
passes ``encoder_hidden_states`` or an ``attention_mask`` (windows of a mask are not defined).
The call's size and scale come from the UNet's :class:`CallContextHook`; a layer's token grid is the
call's (H, W) after as many ⌈n/2⌉ halvings as give its token count, so non-square sizes work. The jitter
of a layer is drawn from a generator seeded by (``seed``, the layer's index, t): reproducible, the same
for every sample of a batch, different between layers and steps.

The wrapped processor is whatever the layer had: diffusers' standard ``AttnProcessor2_0``/``AttnProcessor``
get the exact windowed path above; any other (IP-Adapter's, PAG's, a user's own) also computes the local
branch, by being called on each window's tokens (:func:`windows_by_processor`), which is exact where the
layer pools nothing over tokens (no ``group_norm``/``spatial_norm``: the ``attn1`` of SD and SDXL). A
non-standard processor on a layer that pools over tokens is refused when fusion is applied, naming the layer.

Each wrapper keeps the processor object it replaced; ``remove_scale_fusion`` sets exactly those objects
back (``UNet2DModel`` has no ``attn_processors``/``set_attn_processor``, so processors are swapped per
``Attention`` module with ``set_processor``), leaving no state outside the UNet's own modules.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from hiresdiff.hooks.base import attached
from hiresdiff.hooks.call_context import CALL_CONTEXT_HOOK, CallContextHook
from hiresdiff.methods.freescale import (
    ScaleFusionConfig,
    downsampled_size,
    fuse,
    fusion_window_starts,
    gaussian_blur,
    gaussian_blur_tokens,
    token_level,
)


def windowed_attention(
    attn: Attention,
    hidden_states: torch.Tensor,
    grid: tuple[int, int],
    window: tuple[int, int],
    starts: tuple[list[int], list[int]],
    windows_per_batch: int,
    temb: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """h_local: ``attn``'s self-attention inside the windows at ``starts`` (rows, columns), overlaps averaged.

    ``hidden_states`` is (B, N, C) on the token ``grid`` (h, w) or (B, C, h, w); the result has its shape.
    """
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    input_ndim = hidden_states.ndim
    if input_ndim == 4:
        batch, channels, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
    b, heads = query.shape[0], attn.heads
    head_dim = key.shape[-1] // heads
    query, key, value = (x.view(b, -1, heads, head_dim).transpose(1, 2) for x in (query, key, value))
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    (gh, gw), (wh, ww) = grid, window
    query, key, value = (x.reshape(b, heads, gh, gw, head_dim) for x in (query, key, value))
    total = torch.zeros_like(query)
    count = torch.zeros(gh, gw, 1, dtype=query.dtype, device=query.device)
    views = [(y, x) for y in starts[0] for x in starts[1]]
    for first in range(0, len(views), windows_per_batch):
        batch_views = views[first : first + windows_per_batch]
        q, k, v = (
            torch.cat([t[:, :, y : y + wh, x : x + ww].reshape(b, heads, wh * ww, head_dim) for y, x in batch_views])
            for t in (query, key, value)
        )
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
        out = out.view(len(batch_views), b, heads, wh, ww, head_dim)
        for i, (y, x) in enumerate(batch_views):
            total[:, :, y : y + wh, x : x + ww] += out[i]
            count[y : y + wh, x : x + ww] += 1
    out = (total / count).reshape(b, heads, gh * gw, head_dim).transpose(1, 2).reshape(b, gh * gw, heads * head_dim)
    out = attn.to_out[1](attn.to_out[0](out.to(query.dtype)))
    if input_ndim == 4:
        out = out.transpose(-1, -2).reshape(batch, channels, height, width)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


def windows_by_processor(
    processor,
    attn: Attention,
    hidden_states: torch.Tensor,
    grid: tuple[int, int],
    window: tuple[int, int],
    starts: tuple[list[int], list[int]],
    windows_per_batch: int,
    **kwargs,
) -> torch.Tensor:
    """h_local by the layer's own ``processor``, called on the tokens (B, wh·ww, C) of each window (batched),
    overlaps averaged; ``hidden_states`` is (B, N, C) on the token ``grid``."""
    (gh, gw), (wh, ww) = grid, window
    b, _, c = hidden_states.shape
    tokens = hidden_states.view(b, gh, gw, c)
    total = torch.zeros_like(tokens)
    count = torch.zeros(gh, gw, 1, dtype=tokens.dtype, device=tokens.device)
    views = [(y, x) for y in starts[0] for x in starts[1]]
    for first in range(0, len(views), windows_per_batch):
        batch_views = views[first : first + windows_per_batch]
        crops = torch.cat([tokens[:, y : y + wh, x : x + ww].reshape(b, wh * ww, c) for y, x in batch_views])
        out = processor(attn, crops, **kwargs).view(len(batch_views), b, wh, ww, c)
        for i, (y, x) in enumerate(batch_views):
            total[:, y : y + wh, x : x + ww] += out[i]
            count[y : y + wh, x : x + ww] += 1
    return (total / count).view(b, gh * gw, c)


def is_standard(processor) -> bool:
    """Whether ``processor`` is diffusers' plain attention, which :func:`windowed_attention` reproduces exactly."""
    return type(processor) in (AttnProcessor2_0, AttnProcessor)


def pools_over_tokens(attn: Attention) -> bool:
    """Whether the layer normalises over tokens inside the attention (then windows of its input are not its windows)."""
    return attn.group_norm is not None or attn.spatial_norm is not None


class ScaleFusionAttnProcessor:
    """Fuses the wrapped processor's global self-attention with windowed local attention (the fusion equation).

    ``original`` is the processor it replaces (kept for :func:`remove_scale_fusion`), ``index`` the layer's
    position among the fused layers (it seeds the layer's jitter together with ``config.seed`` and t).
    """

    def __init__(self, original, config: ScaleFusionConfig, context: CallContextHook, index: int):
        self.original = original
        self.config = config
        self.context = context
        self.index = index

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states=None,
        attention_mask=None,
        temb=None,
        **kwargs,
    ) -> torch.Tensor:
        if temb is not None:
            kwargs["temb"] = temb
        global_out = self.original(
            attn, hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask, **kwargs
        )
        call = self.context.current
        if call is None or encoder_hidden_states is not None or attention_mask is not None:
            return global_out
        size = call.size[-2:]
        tokens = hidden_states[0, 0].numel() if hidden_states.ndim == 4 else hidden_states.shape[1]
        level = token_level(size, tokens)
        grid = downsampled_size(size, level)
        window = tuple(min(w, g) for w, g in zip(downsampled_size(self.context.trained_size, level), grid))
        if window == grid:
            return global_out
        starts = fusion_window_starts(self.config, self.index, call, grid, window)
        per_batch = self.config.windows_per_batch or max(1, (grid[0] * grid[1]) // (window[0] * window[1]))
        if is_standard(self.original):
            local_out = windowed_attention(attn, hidden_states, grid, window, starts, per_batch, temb)
        else:
            local_out = windows_by_processor(
                self.original, attn, hidden_states, grid, window, starts, per_batch, **kwargs
            )
        kernel, sigma = self.config.kernel_for(call.scale), self.config.sigma
        if global_out.ndim == 4:
            return fuse(global_out, local_out, lambda x: gaussian_blur(x, kernel, sigma))
        return fuse(global_out, local_out, lambda x: gaussian_blur_tokens(x, grid, kernel, sigma))


def self_attentions(unet) -> dict[str, Attention]:
    """The attention layers scale fusion replaces, by module path (spatial self-attention only)."""
    return {
        name: module
        for name, module in unet.named_modules()
        if isinstance(module, Attention) and not module.is_cross_attention and "motion_modules" not in name
    }


def apply_scale_fusion(unet, config: ScaleFusionConfig, context: Optional[CallContextHook] = None) -> list[str]:
    """Give every spatial self-attention of ``unet`` a :class:`ScaleFusionAttnProcessor` wrapping its processor.

    ``context`` defaults to the UNet's attached call context. Returns the module paths replaced.
    ``ValueError`` if ``config`` is not a :class:`ScaleFusionConfig`, there is no call context, fusion is
    already applied, or a layer that normalises over tokens has a non-standard processor.
    """
    if not isinstance(config, ScaleFusionConfig):
        raise ValueError(f"config must be a ScaleFusionConfig; got a {type(config).__name__}")
    context = context if context is not None else attached(unet, CALL_CONTEXT_HOOK)
    if not isinstance(context, CallContextHook):
        raise ValueError("context must be the UNet's CallContextHook: call apply_call_context(unet, ...) first")
    layers = self_attentions(unet)
    if any(isinstance(attn.processor, ScaleFusionAttnProcessor) for attn in layers.values()):
        raise ValueError("scale fusion is already applied to this UNet; call remove_scale_fusion first")
    for name, attn in layers.items():
        if not is_standard(attn.processor) and pools_over_tokens(attn):
            raise ValueError(
                f"scale fusion cannot wrap the {type(attn.processor).__name__} of {name}: the layer normalises "
                "over tokens, so its windows cannot be computed by calling that processor on window crops; "
                "use diffusers' AttnProcessor2_0 there, or a recipe without fusion (fusion=False)"
            )
    for index, attn in enumerate(layers.values()):
        attn.set_processor(ScaleFusionAttnProcessor(attn.processor, config, context, index))
    return list(layers)


def remove_scale_fusion(unet) -> None:
    """Put back the exact processor object every :class:`ScaleFusionAttnProcessor` of ``unet`` wraps."""
    for module in unet.modules():
        if isinstance(module, Attention) and isinstance(module.processor, ScaleFusionAttnProcessor):
            module.set_processor(module.processor.original)
