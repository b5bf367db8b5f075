"""Upsample Guidance on a flow-matching transformer (FLUX.1, SD3/3.5), as a named diffusers hook.

Every transformer call becomes the guided velocity of :mod:`hiresdiff.methods.upsample_guidance_flow`,

    ṽ = v + w_σ · U[ (v′ − (√k − 1)·D[x_σ]) / (σ + √k(1 − σ)) − D[v] ],   v′ = v(c·D[x_σ], τ) at the trained size,

on the call's latent grid (FLUX's packed tokens are unpacked, guided and packed again; the low-resolution call
gets the position ids of its own grid). σ is read from the call's ``timestep`` (FLUX: σ, SD3: σ·1000), never
from a counter, and placed on the step fraction of the scheduler's grid (η's window), so any flow-matching
scheduler, shift and CFG batch work (UG is linear in the prediction, so guiding
both CFG halves equals guiding their combination). Everything else the transformer receives — text states,
pooled projections, FLUX's guidance embedding, ``joint_attention_kwargs`` — is passed unchanged: conditioning
does not depend on the resolution. ControlNet residuals on tokens are refused (they have no low-resolution
counterpart without running the ControlNet again). The math runs in float32 and is cast back once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch

from hiresdiff.core.resample import axis_factors
from hiresdiff.core.step_fraction import Clock, continuous_clock
from hiresdiff.denoisers.registry import DenoiserFamily
from hiresdiff.hooks.base import DenoiserCallHook
from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig
from hiresdiff.methods.upsample_guidance_flow import nested_flow_upsample_guidance

CONTROLNET_ARGUMENTS = ("controlnet_block_samples", "controlnet_single_block_samples", "block_controlnet_hidden_states")


def check_grid(size: Sequence[int], levels: Sequence[UpsampleGuidanceConfig], multiple: int) -> None:
    """``ValueError`` naming height and width unless the latent grid ``size`` divides by every level's factor and the
    transformer's own ``multiple`` (FLUX's packing, SD3's patch) at every level's size."""
    h, w = size
    for level in levels:
        fh, fw = axis_factors(level.factor, 4)[-2:]
        if h % (fh * multiple) or w % (fw * multiple):
            raise ValueError(
                f"latent (height, width) {(h, w)} must be multiples of ({fh * multiple}, {fw * multiple}) for "
                f"Upsample Guidance by {(fh, fw)} on this transformer (its size multiple is {multiple})"
            )
        h, w = h // fh, w // fw


class FlowUpsampleGuidanceHook(DenoiserCallHook):
    """Replaces a flow transformer's forward by the guided velocity; holds only the levels, the family and the clock
    of the sampling grid (σ → step fraction; default the continuous one, p = 1 − σ)."""

    def __init__(
        self, levels: Sequence[UpsampleGuidanceConfig], family: DenoiserFamily, multiple: int, clock: Optional[Clock]
    ):
        super().__init__()
        self.levels, self.layout, self.family, self.multiple = list(levels), family.layout, family, multiple
        self.clock = clock or continuous_clock(1.0)

    def new_forward(self, module, *args, **kwargs):
        arguments = self.arguments(module, args, kwargs)
        present = [name for name in CONTROLNET_ARGUMENTS if arguments.get(name) is not None]
        if present:
            raise ValueError(
                f"Upsample Guidance on a transformer does not support ControlNet residuals ({', '.join(present)})"
            )
        layout = self.layout
        x = layout.input_grid(arguments)
        check_grid(x.shape[-2:], self.levels, self.multiple)
        timestep = torch.as_tensor(arguments["timestep"])
        per_token = timestep.ndim == 2  # Wan 2.2 TI2V's expand_timesteps: the step's time, 0 on a conditioning frame
        times = timestep.float().amax(1) if per_token else timestep.float().expand(x.shape[0])
        sigma = times / layout.time_unit  # on a conditioning frame, whose prediction the pipeline discards, too
        if not torch.any(self.levels[0].weight(self.clock(sigma)) != 0):
            return self.fn_ref.original_forward(*args, **kwargs)

        def v_fn(z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            call = layout.with_input(arguments, z.to(x.dtype))
            t = s.to(x.device) * layout.time_unit
            if per_token:  # the call's own times at its size, the pooled token weights times τ at a smaller one
                same = z.shape[-2:] == x.shape[-2:]
                t = timestep if same else t[:, None] * layout.token_weights(timestep, x.shape[-3:], z.shape[-3:])
            # τ·unit unrounded: with UniPC (Wan) the timesteps are integers, which would round it
            dtype = timestep.dtype if timestep.is_floating_point() else torch.float32
            call.update(timestep=t.to(device=x.device, dtype=dtype), return_dict=False)
            return layout.to_grid(self.fn_ref.original_forward(**call)[0], z.shape[-2:]).float()

        guided = nested_flow_upsample_guidance(v_fn, x.float(), sigma.to(x.device), self.levels, self.clock)
        output = layout.from_grid(guided.to(x.dtype))
        return self.family.output_cls(sample=output) if arguments.get("return_dict", True) else (output,)
