"""Helpers of the Upsample Guidance hook tests: a seeded run, a UNet call recorder, a UNet snapshot and
the reference math computed independently of hiresdiff (avg-pool for D, numpy interpolation for τ)."""

from __future__ import annotations

import inspect
import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

PROMPT = "a red cat"


def pipeline_inputs(pipe, height: int = 32, width: int = 32, **overrides) -> dict:
    """The arguments of a seeded 2-step run of a tiny pipeline (control image, frames as the pipeline needs)."""
    components, parameters = pipe.components, inspect.signature(pipe.__call__).parameters
    kwargs = dict(num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
    if "prompt" in parameters:
        kwargs["prompt"] = PROMPT
    if "height" in parameters:
        kwargs.update(height=height, width=width)
    if "motion_adapter" in components:
        kwargs["num_frames"] = 2
    if ("controlnet" in components or "adapter" in components) and "image" in parameters:
        kwargs["image"] = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(1))
    kwargs.update(overrides)
    return kwargs


def run(pipe, **overrides) -> torch.Tensor:
    """The output of :func:`pipeline_inputs`'s run as a tensor: images (B, H, W, 3) or videos (B, F, H, W, 3)."""
    output = pipe(**pipeline_inputs(pipe, **overrides))
    return torch.as_tensor(output.frames if hasattr(output, "frames") else output.images)


class UNetCallRecorder:
    """Records the arguments (by name) and outputs of every call of a UNet's forward; install *before* applying UG.

    The hook wraps the forward it finds, so with the recorder below it every high- and low-res call is
    seen. ``fail_at`` = n raises ``RuntimeError`` at the n-th call (1-based) to simulate a crash mid-run.
    """

    def __init__(self, unet, fail_at: Optional[int] = None):
        self.unet, self.fail_at, self.calls, self.outputs = unet, fail_at, [], []
        self.forward = unet.forward
        self.signature = inspect.signature(self.forward)

    def __call__(self, *args, **kwargs):
        arguments = self.signature.bind(*args, **kwargs).arguments  # the UNet pops T2I-Adapter lists: copy them
        self.calls.append({name: list(v) if isinstance(v, list) else v for name, v in arguments.items()})
        if self.fail_at == len(self.calls):
            raise RuntimeError("simulated failure inside the UNet")
        self.outputs.append(self.forward(*args, **kwargs))
        return self.outputs[-1]

    def __enter__(self):
        self.unet.forward = self
        return self

    def __exit__(self, *exc):
        del self.unet.forward


def unet_snapshot(unet) -> dict:
    """Everything apply/remove could change on a UNet: instance attributes, forward, processors, config, weights."""
    return {
        "attributes": sorted(vars(unet)),
        "forward": unet.forward.__func__,
        "processors": {name: id(m.processor) for name, m in unet.named_modules() if hasattr(m, "processor")},
        "config": dict(unet.config),
        "weights": {name: p.clone() for name, p in unet.state_dict().items()},
    }


def assert_same_snapshot(a: dict, b: dict) -> None:
    assert a["attributes"] == b["attributes"]
    assert a["forward"] is b["forward"]
    assert a["processors"] == b["processors"]
    assert a["config"] == b["config"]
    assert a["weights"].keys() == b["weights"].keys()
    assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])


def block_mean(x: torch.Tensor, factors: tuple[int, ...]) -> torch.Tensor:
    """D by average pooling: factors (fh, fw) on (B, C, H, W) or (ff, fh, fw) on (B, C, F, H, W)."""
    return F.avg_pool2d(x, factors) if x.ndim == 4 else F.avg_pool3d(x, factors)


def _log_snr(alphas_cumprod: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    ac = alphas_cumprod.double().numpy()
    return np.arange(len(ac), dtype=np.float64), np.log(ac / (1 - ac))


def expected_tau(alphas_cumprod: torch.Tensor, t: float, k: int) -> float:
    """τ with log SNR(τ) = log SNR(t) + log k, by numpy interpolation of the schedule's log-SNR."""
    steps, lam = _log_snr(alphas_cumprod)
    return float(np.interp(-(np.interp(t, steps, lam) + math.log(k)), -lam, steps))


def expected_lowres_sample(
    sample: torch.Tensor, alphas_cumprod: torch.Tensor, t: float, factors: tuple[int, ...]
) -> torch.Tensor:
    """D[x_t]/√P with P = ᾱ_t + (1 − ᾱ_t)/k; ᾱ at a real t interpolated in log-SNR."""
    steps, lam = _log_snr(alphas_cumprod)
    a = 1 / (1 + math.exp(-np.interp(t, steps, lam)))
    return block_mean(sample, factors) / math.sqrt(a + (1 - a) / math.prod(factors))


def guided_pairs(calls: list[dict]) -> list[tuple[dict, dict]]:
    """(high, low) call pairs: a low-res call is one whose sample is smaller than the call before it."""
    return [(high, low) for high, low in zip(calls, calls[1:]) if low["sample"].numel() < high["sample"].numel()]
