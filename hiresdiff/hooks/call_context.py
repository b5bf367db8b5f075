"""What the UNet call in progress is: its time and its scale relative to the trained size.

Per-call modifications that live below the UNet (dilated convs, fused self-attention, feature
upsamplers) need the current timestep and the size of the current call. The timestep stays the call's own
tensor on its device: recording it costs no host-device sync (a part that branches on t reads one scalar).
A hook on the UNet itself
records them for the duration of each call (:class:`CallContextHook`); hooks on submodules read them
with :func:`current_call`. Nothing counts calls, so extra UNet calls (Upsample Guidance's low-resolution
branch, second-order schedulers, CFG batches) each see their own context. Nested calls (a call made
from inside another) restore the outer context when they return, also on an exception.

The context hook is the innermost hook on the UNet: attach it before any hook that calls the UNet
again (Upsample Guidance), so that each real call passes through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch

from hiresdiff.hooks.base import DenoiserCallHook, attach, attached, detach

CALL_CONTEXT_HOOK = "hiresdiff_call_context"


@dataclass(frozen=True)
class UNetCall:
    """One UNet call: ``timestep`` (the call's own tensor, on its device, scalar or (B,)),
    the sample's trailing ``size``
    ((H, W) or (F, H, W)), ``scale`` = (H/h0, W/w0) relative to the trained latent size (h0, w0),
    and T = ``num_train_timesteps`` of the model's schedule."""

    timestep: torch.Tensor
    size: tuple[int, ...]
    scale: tuple[float, float]
    num_train_timesteps: int

    def time_fraction(self) -> float:
        """t/T of the call (the largest t of a batch): 1 at pure noise, 0 at the clean image."""
        return float(self.timestep.max()) / self.num_train_timesteps


class CallContextHook(DenoiserCallHook):
    """Records a :class:`UNetCall` while the UNet (or flow transformer) runs; holds the trained latent size and T
    (a flow transformer's time unit: σ·T is its ``timestep``, so t/T = σ)."""

    def __init__(self, trained_size: Sequence[int], num_train_timesteps: float, layout=None):
        super().__init__()
        self.trained_size = tuple(trained_size)
        self.num_train_timesteps = num_train_timesteps
        self.layout = layout
        self.current: Optional[UNetCall] = None

    def new_forward(self, module, *args, **kwargs):
        arguments = self.arguments(module, args, kwargs)
        timestep = arguments["timestep"]
        if self.layout is None:
            sample = arguments["sample"]
            size = tuple(sample.shape[2:])
        else:
            sample = arguments[self.layout.input_name]
            size = self.layout.grid_size(arguments)
        h0, w0 = self.trained_size
        timestep = timestep if isinstance(timestep, torch.Tensor) else torch.tensor(timestep, device=sample.device)
        call = UNetCall(timestep.detach(), size, (size[-2] / h0, size[-1] / w0), self.num_train_timesteps)
        outer, self.current = self.current, call
        try:
            return self.fn_ref.original_forward(*args, **kwargs)
        finally:
            self.current = outer


def apply_call_context(unet, trained_size: Sequence[int], num_train_timesteps: float, layout=None) -> CallContextHook:
    """Attach the context hook to ``unet`` (trained latent size (h0, w0) and T of its schedule; a flow transformer's
    ``layout`` says where its grid is, and T is then its time unit)."""
    hook = CallContextHook(trained_size, num_train_timesteps, layout)
    attach(unet, hook, CALL_CONTEXT_HOOK)
    return hook


def remove_call_context(unet) -> None:
    detach(unet, CALL_CONTEXT_HOOK)


def current_call(unet) -> Optional[UNetCall]:
    """The call of ``unet`` in progress, or ``None`` outside a call or without the context hook."""
    hook = attached(unet, CALL_CONTEXT_HOOK)
    return hook.current if hook is not None else None
