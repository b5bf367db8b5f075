"""Position rescaling for transformers above their trained token grid: what replaces FreeScale's restrained
dilation on a DiT (the rescalings themselves are in :mod:`hiresdiff.core.rope`).

A convolution dilated by s sees the neighbourhood it was trained on, stretched; a rotary embedding with its
positions divided by s (position interpolation) sees the position range it was trained on, stretched. As the
dilation, the rescaling can be restrained to the early steps (``until``), where the layout forms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from hiresdiff.checks import is_real
from hiresdiff.core.rope import ROPE_SCALINGS
from hiresdiff.core.step_fraction import in_window

ATTENTION_SCALINGS = ("none", "yarn", "entropy")


@dataclass(frozen=True)
class PositionConfig:
    """How a transformer's position embedding is rescaled in a call above the trained size.

    Attributes:
        method: ``"pi"`` (position interpolation), ``"ntk"`` (NTK-aware base) or ``"yarn"`` (per-frequency ramp),
            see :func:`hiresdiff.core.rope.scaled_rope_frequencies`. SD3's learned absolute embedding takes only
            ``"pi"`` (its trained-size crop interpolated to the call's grid).
        until: share of the stage's steps, from the first, during which it is active (as ``DilationConfig.until``,
            on the step fraction p of :mod:`hiresdiff.core.step_fraction`: while p < until). 1 = every step.
        attention: logit scaling: ``"yarn"`` (×(0.1·ln s + 1)², s the geometric mean of the axis scales),
            ``"entropy"`` (×log N / log N_train over the image tokens) or ``"none"``; ``None`` = ``"yarn"`` for
            ``method="yarn"``, else ``"none"``.
    """

    method: str = "pi"
    until: float = 1.0
    attention: Optional[str] = None

    def __post_init__(self):
        if self.method not in ROPE_SCALINGS[1:]:
            raise ValueError(f"positions method must be one of {ROPE_SCALINGS[1:]}; got {self.method!r}")
        if not (is_real(self.until) and 0 <= self.until <= 1):
            raise ValueError(f"positions until must be a number in [0, 1]; got {self.until!r}")
        if self.attention is not None and self.attention not in ATTENTION_SCALINGS:
            raise ValueError(f"positions attention must be one of {ATTENTION_SCALINGS} or None; got {self.attention!r}")

    @property
    def attention_scaling(self) -> str:
        return self.attention or ("yarn" if self.method == "yarn" else "none")

    def is_active(self, progress: float) -> bool:
        """Whether a call at step fraction ``progress`` rescales: p < until."""
        return bool(in_window(progress, self.until))

    @staticmethod
    def mean_scale(scale_hw) -> float:
        """s for the attention temperature: the geometric mean of the per-axis scales."""
        return math.sqrt(scale_hw[0] * scale_hw[1])
