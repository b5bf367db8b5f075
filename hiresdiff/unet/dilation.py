"""Restrained dilated convolution (FreeScale, "Restrained Dilated Convolution") as diffusers hooks
on a UNet's deep convs.

``apply_dilation(unet, DilationConfig(...), context)`` hooks the selected ``nn.Conv2d`` modules; while a
UNet call at scale (s_h, s_w) relative to the trained size is early (t ≥ T − until·T) each runs

    F.conv2d(x, weight, bias, stride, padding=p + (d − 1)·(k − 1)/2, dilation=(d_h, d_w))

per axis, with (d_h, d_w) = the rounded scale (:meth:`DilationConfig.dilation_for_scale`); the padding
keeps the output size (for the 3×3 "same" convs d·(k//2); for the stride-2 downsampler, padding 1 → d).
Otherwise — late steps, scale 1, or outside a UNet call — the conv's own forward runs untouched. The
time and scale come from the UNet's :class:`CallContextHook`, never from counting calls, and no module
attribute (``dilation``, ``padding``) is ever changed: ``remove_dilation`` detaches the hooks and the
convs are exactly as before, also after an exception inside the UNet.

Which convs (the same rule for ``UNet2DConditionModel`` — SD 1.x/2.x, SDXL —, ``UNetMotionModel`` —
AnimateDiff — and pixel ``UNet2DModel``): the 3×3 convs (never 1×1 shortcuts) of

* the downsampler entering the deepest level (``down_blocks[-2].downsamplers``),
* the deepest level's resnets (``down_blocks[-1].resnets``: conv1, conv2),
* the mid block's resnets;

a LoRA-wrapped conv (peft) is dilated as its base conv and its adapters' down-projections.

For SDXL (3 levels) this is exactly the release's choice (down block 1's downsampler, down block 2 and
mid block resnets). SD 1.5 has 4 levels; the rule keeps "the deepest level", whose receptive field a
stage's scale stretches most, rather than the level of the same token-grid size as SDXL's. Up blocks
are never dilated (the paper: dilating them brings messy textures). A UNet with a single level has no
downsampler to dilate.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Optional

import torch
import torch.nn.functional as F
from diffusers.hooks import ModelHook

from hiresdiff.hooks.base import attach, attached, detach
from hiresdiff.hooks.call_context import CALL_CONTEXT_HOOK, CallContextHook
from hiresdiff.methods.family_defaults import DIFFUSION
from hiresdiff.methods.freescale import DilationConfig, dilated_padding

DILATION_HOOK = "hiresdiff_dilation"


class DilatedConvHook(ModelHook):
    """Runs a conv dilated by the current call's scale while the call is early; else its own forward."""

    def __init__(self, config: DilationConfig, context: CallContextHook):
        super().__init__()
        self.config = config
        self.context = context

    def new_forward(self, module: torch.nn.Conv2d, *args, **kwargs):
        call = self.context.current
        if call is None or not self.config.is_active(call.progress):
            return self.fn_ref.original_forward(*args, **kwargs)
        dilation = self.config.dilation_for_scale(call.scale)
        if dilation == (1, 1):
            return self.fn_ref.original_forward(*args, **kwargs)
        (x,) = args
        padding = dilated_padding(module.kernel_size, module.padding, dilation)
        return F.conv2d(x, module.weight, module.bias, module.stride, padding, dilation, module.groups)


def _candidates(unet) -> Iterator[tuple[str, object]]:
    down = list(unet.down_blocks)
    if len(down) >= 2:
        for j, downsampler in enumerate(getattr(down[-2], "downsamplers", None) or []):
            yield from _convs_of(
                f"down_blocks.{len(down) - 2}.downsamplers.{j}.conv", getattr(downsampler, "conv", None)
            )
    blocks = [(f"down_blocks.{len(down) - 1}", down[-1])]
    if getattr(unet, "mid_block", None) is not None:
        blocks.append(("mid_block", unet.mid_block))
    for prefix, block in blocks:
        for j, resnet in enumerate(getattr(block, "resnets", [])):
            for attr in ("conv1", "conv2"):
                yield from _convs_of(f"{prefix}.resnets.{j}.{attr}", getattr(resnet, attr, None))


def _convs_of(path: str, module) -> Iterator[tuple[str, object]]:
    """The convs that make up ``module``: itself, or for a LoRA-wrapped conv (peft) its base conv and every
    adapter's down-projection, which has the base's kernel and so sees the same (dilated) neighbourhood."""
    base = getattr(module, "base_layer", None)
    if base is None:
        yield path, module
        return
    yield f"{path}.base_layer", base
    for adapter, down in getattr(module, "lora_A", {}).items():
        yield f"{path}.lora_A.{adapter}", down


def _dilatable(conv) -> bool:
    """A plain zero-padded, undilated conv with an odd kernel larger than 1×1."""
    return (
        isinstance(conv, torch.nn.Conv2d)
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
        and conv.dilation == (1, 1)
        and all(k % 2 for k in conv.kernel_size)
        and max(conv.kernel_size) > 1
    )


def dilated_convs(unet) -> dict[str, torch.nn.Conv2d]:
    """The convs :func:`apply_dilation` hooks, by module path (see the module docstring for the rule)."""
    return {name: conv for name, conv in _candidates(unet) if _dilatable(conv)}


def _context(unet, context: Optional[CallContextHook]) -> CallContextHook:
    context = context if context is not None else attached(unet, CALL_CONTEXT_HOOK)
    if not isinstance(context, CallContextHook):
        raise ValueError("context must be the UNet's CallContextHook: call apply_call_context(unet, ...) first")
    return context


def apply_dilation(unet, config: DilationConfig, context: Optional[CallContextHook] = None) -> list[str]:
    """Hook the selected convs of ``unet``; ``context`` defaults to the UNet's attached call context.

    Returns the paths of the hooked convs. ``ValueError`` if ``config`` is not a :class:`DilationConfig`,
    there is no call context, or dilation is already applied. ``until=None`` is a UNet's (diffusion) default.
    """
    if not isinstance(config, DilationConfig):
        raise ValueError(f"config must be a DilationConfig; got a {type(config).__name__}")
    config = config.for_family(DIFFUSION)
    context = _context(unet, context)
    convs = dilated_convs(unet)
    if any(attached(conv, DILATION_HOOK) is not None for conv in convs.values()):
        raise ValueError("dilation is already applied to this UNet; call remove_dilation first")
    for conv in convs.values():
        attach(conv, DilatedConvHook(config, context), DILATION_HOOK)
    return list(convs)


def remove_dilation(unet) -> None:
    """Detach every dilation hook from ``unet``'s modules (a no-op where there is none)."""
    for module in unet.modules():
        detach(module, DILATION_HOOK)
