"""Self-Cascade's time-aware feature upsamplers (Guo et al. 2024, §3.2, eq. 11), as diffusers hooks.

For a stage that refines the upsampled pivot z₀^{r−1}, the frozen UNet's encoder runs once on the clean
pivot (at t = 0, with the call's own conditioning) and gives features h_{n,0}^{r−1} after every down
block and the mid block. Each UNet call of the stage then adds, at the same places,

    ĥ_{n,t}^r = h_{n,t}^r + φ_n(h_{n,0}^{r−1}, t),

with φ_n = bilinear resize to the level's size (×2 between ×2 stages) → 1×1 conv to a few hidden
channels → two residual blocks conditioned on the UNet's own time embedding (diffusers'
``ResnetBlock2D``) → a zero-initialised 1×1 conv back. Zero-initialised upsamplers therefore leave the
tuning-free cascade unchanged. They act only where t > ``threshold`` (released code: 100 of T = 1000), per sample,
read on the step fraction of the stage's grid (p < 1 − threshold/T, :mod:`hiresdiff.core.step_fraction`).
A down block's output is also its last skip feature, so both get the sum. The pivot features are
computed once per stage and never rescaled (the released code rescales them at every step: a bug).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.hooks import ModelHook
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import ResnetBlock2D

from hiresdiff.core.step_fraction import continuous_clock, in_window
from hiresdiff.hooks.base import DenoiserCallHook, attach, detach
from hiresdiff.unet.lowres_call import RESIDUALS

UPSAMPLERS_HOOK = "hiresdiff_feature_upsamplers"
_BLOCK_HOOK = "hiresdiff_feature_upsampler"


class FeatureUpsampler(torch.nn.Module):
    """φ_n for one feature level: resize → 1×1 in → two time-conditioned residual blocks → zero-initialised 1×1 out."""

    def __init__(self, channels: int, temb_channels: int, hidden_channels: int):
        super().__init__()
        groups = min(4, hidden_channels)
        self.proj_in = torch.nn.Conv2d(channels, hidden_channels, 1)
        self.blocks = torch.nn.ModuleList(
            ResnetBlock2D(in_channels=hidden_channels, temb_channels=temb_channels, groups=groups) for _ in range(2)
        )
        self.proj_out = torch.nn.Conv2d(hidden_channels, channels, 1)
        torch.nn.init.zeros_(self.proj_out.weight)
        torch.nn.init.zeros_(self.proj_out.bias)

    def forward(self, pivot_features: torch.Tensor, temb: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        x = F.interpolate(pivot_features, size=tuple(size), mode="bilinear", align_corners=False)
        x = self.proj_in(x)
        for block in self.blocks:
            x = block(x, temb)
        return self.proj_out(x)


class FeatureUpsamplers(ModelMixin, ConfigMixin):
    """The upsamplers of every skip-feature level of one UNet: one per down block, then the mid block.

    Build them for a UNet with :meth:`for_unet`; save and load with ``save_pretrained`` / ``from_pretrained``
    (safetensors). ``unet_signature`` records what they were built for, checked by :meth:`check_fits`;
    ``scale`` the cascade stage they were trained for (its size over the trained size: 2 refines 32² → 64²
    pivots of a 32² model, 4 refines 64² → 128²).
    """

    @register_to_config
    def __init__(
        self,
        feature_channels: Sequence[int] = (64, 128, 128, 128),
        temb_channels: int = 256,
        hidden_channels: int = 8,
        threshold: float = 100.0,
        unet_signature: Sequence = (),
        scale: int = 2,
    ):
        super().__init__()
        self.levels = torch.nn.ModuleList(FeatureUpsampler(c, temb_channels, hidden_channels) for c in feature_channels)

    @staticmethod
    def signature_of(unet) -> list:
        """What must match between a UNet and its upsamplers: class, channels per level, time-embedding size."""
        channels = list(unet.config.block_out_channels)
        return [type(unet).__name__, channels + [channels[-1]], unet.time_embedding.linear_2.out_features]

    @classmethod
    def for_unet(
        cls, unet, hidden_channels: int = 8, threshold: float = 100.0, seed: int = 0, scale: int = 2
    ) -> FeatureUpsamplers:
        """Upsamplers for ``unet``'s skip-feature levels (down blocks and mid block) at cascade stage ``scale``, their
        output convs zero: they add nothing until trained. The other weights are drawn from ``seed`` (the global
        RNG is untouched)."""
        name, feature_channels, temb_channels = cls.signature_of(unet)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(
                feature_channels=feature_channels,
                temb_channels=temb_channels,
                hidden_channels=hidden_channels,
                threshold=threshold,
                unet_signature=[name, feature_channels, temb_channels],
                scale=scale,
            )

    def check_fits(self, unet) -> None:
        """``ValueError`` if these upsamplers were built for another UNet architecture."""
        expected = self.signature_of(unet)
        if list(self.config.unet_signature) != expected:
            raise ValueError(
                f"upsamplers were built for another UNet: {list(self.config.unet_signature)} "
                f"(class, feature channels, time-embedding size); this UNet is {expected}"
            )


class _State:
    """What the hooks of one attachment share: the pivot features, the current call's time embedding and mask."""

    def __init__(self):
        self.features: Optional[list[torch.Tensor]] = None
        self.capturing: Optional[list[torch.Tensor]] = None
        self.temb: Optional[torch.Tensor] = None
        self.mask: Optional[torch.Tensor] = None  # (B,) 1 where t > threshold during an active call, else None


class _StopAfterMid(Exception):
    """Ends the pivot pass after the mid block: the decoder's output is not needed."""


class _TimeEmbeddingHook(ModelHook):
    def __init__(self, state: _State):
        super().__init__()
        self.state = state

    def post_forward(self, module, output):
        self.state.temb = output
        return output


class _LevelHook(ModelHook):
    """Adds φ_n(h_pivot_n, t) to a down block's output (and last skip feature) or to the mid block's output."""

    def __init__(self, state: _State, level: int, upsampler: FeatureUpsampler, is_mid: bool):
        super().__init__()
        self.state, self.level, self.upsampler, self.is_mid = state, level, upsampler, is_mid

    def post_forward(self, module, output):
        hidden = output if self.is_mid else output[0]
        state = self.state
        if state.capturing is not None:
            state.capturing.append(hidden.detach())
            if self.is_mid:
                raise _StopAfterMid
            return output
        if state.mask is None:
            return output
        pivot = state.features[self.level]
        temb = state.temb.repeat_interleave(hidden.shape[0] // state.temb.shape[0], dim=0)
        mask = state.mask.repeat_interleave(hidden.shape[0] // state.mask.shape[0], dim=0).to(hidden)
        added = hidden + mask.view(-1, 1, 1, 1) * self.upsampler(pivot, temb, hidden.shape[-2:]).to(hidden.dtype)
        return added if self.is_mid else (added, (*output[1][:-1], added))


class _PivotHook(DenoiserCallHook):
    """On the UNet: marks which calls get the upsamplers and computes the pivot features at the first such call."""

    def __init__(self, state: _State, pivot: torch.Tensor, stage_size: Sequence[int], threshold: float, context):
        super().__init__()
        self.state, self.pivot, self.stage_size = state, pivot, tuple(stage_size)
        self.threshold, self.context = threshold, context

    def new_forward(self, module, *args, **kwargs):
        arguments = self.arguments(module, args, kwargs)
        sample, timestep = arguments["sample"], arguments["timestep"]
        if tuple(sample.shape[-2:]) != self.stage_size:
            return self.fn_ref.original_forward(*args, **kwargs)
        if self.state.features is None:
            self.state.features = self.capture(module, arguments, sample.shape[0])
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(sample.shape[0])
        clock, unit = (self.context.clock, self.context.time_unit) if self.context else (continuous_clock(1000), 1000)
        mask = in_window(clock(t), 1 - self.threshold / unit).to(t.device)  # t > threshold, on the step fraction
        outer, self.state.mask = self.state.mask, mask
        try:
            return self.fn_ref.original_forward(*args, **kwargs)
        finally:
            self.state.mask = outer

    @torch.no_grad()
    def capture(self, module, arguments: dict, batch: int) -> list[torch.Tensor]:
        """The plain UNet's features of the clean pivot at t = 0, with the call's conditioning (CFG batch included)."""
        # this pass calls the UNet's forward directly, past its hooks: its tensors go to the UNet's own device (a
        # meta twin's calls arrive on the CPU, hiresdiff.cost.meta_run)
        device = module.device
        pivot = self.pivot.to(device=device, dtype=arguments["sample"].dtype)
        pivot = pivot.repeat(batch // self.pivot.shape[0], *([1] * (self.pivot.ndim - 1)))
        call = {
            name: value.to(device) if isinstance(value, torch.Tensor) else value
            for name, value in arguments.items()
            if name not in RESIDUALS
        }
        call.update(sample=pivot, timestep=torch.zeros(batch, device=pivot.device), return_dict=False)
        outer = self.context.current if self.context is not None else None
        self.state.capturing = []
        try:
            if self.context is not None:
                self.context.current = None  # the pivot pass is the plain UNet: other per-call parts stand aside
            type(module).forward(module, **call)
        except _StopAfterMid:
            pass
        finally:
            features, self.state.capturing = self.state.capturing, None
            if self.context is not None:
                self.context.current = outer
        return features


def feature_blocks(unet) -> list[torch.nn.Module]:
    """The modules whose outputs are the skip-feature levels: every down block, then the mid block."""
    return [*unet.down_blocks, unet.mid_block]


def attach_feature_upsamplers(
    unet, upsamplers: FeatureUpsamplers, pivot: torch.Tensor, context=None, stage_size: Optional[Sequence[int]] = None
) -> None:
    """Add ``upsamplers`` to ``unet``'s calls at ``stage_size`` (default: twice the pivot's size).

    ``pivot`` is the previous stage's clean result in the UNet's space, (B, C, h, w) or (B, C, F, h, w);
    ``context`` the stage's :class:`~hiresdiff.hooks.call_context.CallContextHook` (the pivot pass
    runs with it cleared, so dilation and fusion leave it alone).
    """
    upsamplers.check_fits(unet)
    state = _State()
    size = tuple(stage_size) if stage_size is not None else tuple(2 * n for n in pivot.shape[-2:])
    attach(unet.time_embedding, _TimeEmbeddingHook(state), _BLOCK_HOOK)
    blocks = feature_blocks(unet)
    for level, block in enumerate(blocks):
        attach(block, _LevelHook(state, level, upsamplers.levels[level], block is unet.mid_block), _BLOCK_HOOK)
    attach(unet, _PivotHook(state, pivot, size, float(upsamplers.config.threshold), context), UPSAMPLERS_HOOK)


def detach_feature_upsamplers(unet) -> None:
    """Remove what :func:`attach_feature_upsamplers` attached; the UNet is exactly as before."""
    detach(unet, UPSAMPLERS_HOOK)
    for block in feature_blocks(unet):
        detach(block, _BLOCK_HOOK)
    detach(unet.time_embedding, _BLOCK_HOOK)
