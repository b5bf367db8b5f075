"""Scale fusion on the joint text-image attention of flow transformers (FLUX.1, Qwen-Image, SD3/3.5) and on the
self-attention of video transformers (Wan 2.x), as attention processors.

    h_fusion = G(h_local) + (h_global − G(h_global))        on the image-token grid

``h_global`` is the layer's own processor on all tokens. ``h_local`` is the same processor called once per window
of the trained token grid (stride half a window, interior windows jittered as in
:mod:`hiresdiff.unet.scale_fusion`), each call seeing every text token and the window's image tokens;
the image outputs are averaged where windows overlap, the text outputs of the windows are dropped (text tokens
keep their global output). FLUX's rotary embedding is sliced with the tokens, so every token keeps the rotation of
its place in the whole image (RoPE is applied before windowing; Qwen-Image's text padding mask is passed on and
rebuilt by its processor for the window's tokens). Calling the layer's own processor makes the
local branch exact for any processor: these layers normalise per token (RMS norms of q and k), never over tokens.

Layers: every attention of FLUX's dual-stream blocks (image tokens in ``hidden_states``, text in
``encoder_hidden_states``) and single-stream blocks (text tokens first in ``hidden_states``: their count is the
total minus the call's image tokens), of Qwen-Image's dual-stream blocks (as FLUX's), and of SD3's joint blocks
(``attn``, and SD3.5's image-only ``attn2``), and Wan's self-attention (``blocks.N.attn1``: image tokens only, frame by
frame in (frame, row, column) order; a window is a spatial window through every frame, with its tokens' rotary
embedding; its cross-attention to the text is per token already, so it is left alone).
The processor returns the wrapped processor's output untouched — without computing windows — outside a
transformer call, at scale ≤ 1, when one window covers the grid, and with an ``attention_mask``.
``remove_joint_fusion`` sets back exactly the processor objects it wrapped.
"""

from __future__ import annotations

import inspect
from typing import Optional

import torch
from diffusers.models.attention import AttentionModuleMixin
from diffusers.models.attention_processor import Attention

from hiresdiff.denoisers.registry import size_multiple
from hiresdiff.hooks.call_context import CallContextHook
from hiresdiff.methods.freescale import ScaleFusionConfig, fuse, fusion_window_starts, gaussian_blur_tokens


def _sliced_rope(rope, text: int, index: torch.Tensor):
    """The rotary embedding of the text tokens and the image tokens at ``index``: FLUX's (cos, sin) rows over all
    tokens, text first; Qwen-Image's complex (image, text) frequencies, the image's rows sliced; Wan's (cos, sin) of
    shape (1, tokens, 1, D), image tokens only."""
    if rope is None:
        return None
    if rope[0].is_complex():
        return rope[0][index], rope[1]
    if rope[0].ndim == 4:
        return tuple(part[:, index] for part in rope)
    keep = torch.cat([torch.arange(text, device=index.device), text + index])
    return tuple(part[keep] for part in rope)


class JointFusionProcessor:
    """Fuses a joint attention layer's global output with its windowed local output on the image tokens."""

    def __init__(self, original, config: ScaleFusionConfig, context: CallContextHook, index: int, multiple: int):
        self.original, self.config, self.context, self.index, self.multiple = original, config, context, index, multiple
        parameters = inspect.signature(original.__call__).parameters
        # the keyword its rotary embedding travels by: Wan's processor takes rotary_emb, the others image_rotary_emb
        self.rope_name = "rotary_emb" if "rotary_emb" in parameters else "image_rotary_emb"

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        image_rotary_emb=None,
        encoder_hidden_states_mask: Optional[torch.Tensor] = None,
        **kwargs,
    ):
        # named, so that diffusers' Attention passes them on (it drops what the processor's signature lacks)
        if encoder_hidden_states_mask is not None:  # Qwen-Image's text padding mask
            kwargs = dict(kwargs, encoder_hidden_states_mask=encoder_hidden_states_mask)
        extra = dict(kwargs, **({self.rope_name: image_rotary_emb} if image_rotary_emb is not None else {}))
        global_out = self.original(
            attn, hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask, **extra
        )
        call = self.context.current
        if call is None or attention_mask is not None or max(call.scale) <= 1:
            return global_out
        m = self.multiple
        grid = (call.size[-2] // m, call.size[-1] // m)
        window = tuple(min(t // m, g) for t, g in zip(self.context.trained_size, grid))
        if window == grid:
            return global_out
        frames = call.size[0] if len(call.size) == 3 else 1  # Wan: latent frames (its temporal patch is 1)
        joint = encoder_hidden_states is not None
        text = 0 if joint or frames > 1 else hidden_states.shape[1] - grid[0] * grid[1]  # FLUX single: text first
        image = hidden_states if joint else hidden_states[:, text:]
        rope_text = encoder_hidden_states.shape[1] if joint and image_rotary_emb is not None else text
        positions = torch.arange(frames * grid[0] * grid[1], device=image.device).view(frames, *grid)
        starts = fusion_window_starts(self.config, self.index, call, grid, window)
        total, count = None, torch.zeros(positions.numel(), 1, device=image.device, dtype=image.dtype)
        for y in starts[0]:
            for x in starts[1]:
                index = positions[:, y : y + window[0], x : x + window[1]].reshape(-1)
                rope = _sliced_rope(image_rotary_emb, rope_text, index)
                window_extra = dict(kwargs, **({self.rope_name: rope} if rope is not None else {}))
                tokens = image[:, index] if joint else torch.cat([hidden_states[:, :text], image[:, index]], dim=1)
                out = self.original(attn, tokens, encoder_hidden_states=encoder_hidden_states, **window_extra)
                out = out[0] if isinstance(out, tuple) else out[:, text:]
                total = (
                    torch.zeros(out.shape[0], len(count), out.shape[-1], device=out.device, dtype=out.dtype)
                    if total is None
                    else total
                )
                total[:, index] += out
                count[index] += 1
        local = total / count
        kernel, sigma = self.config.kernel_for(call.scale), self.config.sigma
        blur = lambda x: gaussian_blur_tokens(  # noqa: E731  (frame by frame)
            x.reshape(-1, grid[0] * grid[1], x.shape[-1]), grid, kernel, sigma
        ).reshape(x.shape)
        if isinstance(global_out, tuple):
            return (fuse(global_out[0], local, blur), *global_out[1:])
        if text:
            return torch.cat([global_out[:, :text], fuse(global_out[:, text:], local, blur)], dim=1)
        return fuse(global_out, local, blur)


def joint_attentions(transformer) -> dict:
    """The attention layers :func:`apply_joint_fusion` wraps, by module path: every attention inside the
    transformer's blocks (FLUX: ``transformer_blocks`` and ``single_transformer_blocks``; SD3:
    ``transformer_blocks``), Wan's self-attentions (``blocks.N.attn1``)."""
    return {
        name: module
        for name, module in transformer.named_modules()
        if isinstance(module, (Attention, AttentionModuleMixin))
        and ("transformer_blocks" in name or (name.startswith("blocks.") and name.endswith(".attn1")))
    }


def apply_joint_fusion(transformer, config: ScaleFusionConfig, context: CallContextHook) -> list[str]:
    """Wrap every joint attention of ``transformer`` in a :class:`JointFusionProcessor`; returns their paths."""
    if not isinstance(config, ScaleFusionConfig):
        raise ValueError(f"fusion must be a ScaleFusionConfig; got a {type(config).__name__}")
    layers = joint_attentions(transformer)
    if any(isinstance(attn.processor, JointFusionProcessor) for attn in layers.values()):
        raise ValueError("scale fusion is already applied to this transformer; call remove_joint_fusion first")
    multiple = size_multiple(transformer)
    for index, attn in enumerate(layers.values()):
        attn.set_processor(JointFusionProcessor(attn.processor, config, context, index, multiple))
    return list(layers)


def remove_joint_fusion(transformer) -> None:
    """Put back the exact processor object every :class:`JointFusionProcessor` of ``transformer`` wraps."""
    for attn in joint_attentions(transformer).values():
        if isinstance(attn.processor, JointFusionProcessor):
            attn.set_processor(attn.processor.original)
