"""Settings whose best value depends on the model family: diffusion (VP, EDM) or flow matching.

A cascade's later stage restarts at the step fraction p = 1 − strength (:mod:`hiresdiff.core.step_fraction`), and
every window of FreeScale is a share of the same axis. The papers' values (restart 0.7, dilation for the first 0.7
of the steps, detail cosine ((1 + cos πp)/2)^α with α = 2) are tuned on VP models. On a flow model a restart at
0.7 regenerates instead of refining, and at the flow restart 0.3 (p ≥ 0.7) the papers' windows are empty or nearly
so: dilation's analogue (position interpolation until p = 0.7) never runs, and α = 2 makes the detail weight at most
0.04. The flow values are measured on emoji-flux (benchmarks/README.md, "Cascades that refine on flow models" and
"FreeScale's windows on flow models").

A setting left to the family reads ``None`` (``strength``, ``until``) or :data:`FAMILY` (``detail_alpha``, whose
``None`` means "off"); :meth:`hiresdiff.recipe.Recipe.for_family` fills them in before a run.
"""

from __future__ import annotations

from dataclasses import dataclass

#: ``detail_alpha=FAMILY``: the model family's detail-control exponent
FAMILY = "family"


@dataclass(frozen=True)
class FamilyDefaults:
    """A model family's cascade ``strength``, restrained dilation / position window ``until`` and detail α."""

    strength: float
    until: float
    detail_alpha: float


#: the papers' values (FreeScale's release: restart at step 15 of 50, ``dilate_tau = 35``, ``cosine_scale = 2``)
DIFFUSION = FamilyDefaults(strength=0.7, until=0.7, detail_alpha=2.0)
#: measured on emoji-flux at 2× and 4×
FLOW = FamilyDefaults(strength=0.3, until=0.88, detail_alpha=0.5)


def family_defaults(flow: bool) -> FamilyDefaults:
    """The defaults of a flow-matching model (``flow``) or a diffusion model."""
    return FLOW if flow else DIFFUSION
