"""The composition spine (docs/architecture.md, "Recipes, stages and the composition spine"):
a :class:`Recipe` is a set of optional parts, and a run is a
list of :class:`Stage` s, each with the per-call modifications its scale calls for.

| part         | what it does                                                        | preset           |
|--------------|---------------------------------------------------------------------|------------------|
| ``cascade``  | stages from the trained size up; pivot replacement; detail control   | Self-Cascade, FreeScale |
| ``ug``       | eq. 4 on every UNet call of a stage above the trained size           | Upsample Guidance |
| ``dilation`` | down- and mid-block convs dilated by the stage's scale while t is early | FreeScale     |
| ``fusion``   | self-attention = G(local windows) + (global − G(global))             | FreeScale        |
| ``positions``| a transformer's position embedding rescaled (PI/NTK/YaRN)            | (transformers)   |
| ``upsamplers`` | trained feature upsamplers added to skip features (needs a cascade) | tuned Self-Cascade |

Without ``cascade`` a run is one stage at the target size. With it, stage 0 is the plain sample at the
trained size and every later stage re-noises the upsampled previous result (:mod:`hiresdiff.methods.self_cascade`).
At scale 1 every per-call part is the identity, so stage 0 is plain sampling bit for bit.
On a flow transformer (FLUX, SD3) ``dilation`` is carried out as its analogue, position interpolation over the
same early window, unless ``positions`` chooses another rescaling.
The recipe is plain data: it imports no diffusers, and the drivers (``integrations.pixel.sample`` and
``hiresdiff.generate``) carry it out.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from hiresdiff.checks import check_positive_int, check_strength, is_int
from hiresdiff.defaults import PRESETS
from hiresdiff.methods.family_defaults import FAMILY, family_defaults
from hiresdiff.methods.freescale import DilationConfig, ScaleFusionConfig
from hiresdiff.methods.positions import PositionConfig
from hiresdiff.methods.self_cascade import CascadeConfig, check_size, stage_sizes
from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig, levels_for_scale

#: The fast recipe's later stages: steps each, and the restart strength (measured, see :meth:`Recipe.fast`).
FAST_STAGE_STEPS = 3
FAST_STRENGTH = 0.3
#: With a super-resolution upscaler: one jump to the target refined by one step from 0.1 (measured at 4× on the
#: three owned models, benchmarks/README.md "Refining the SR jump").
FAST_SR_STAGE_STEPS = 1
FAST_SR_STRENGTH = 0.1


@dataclass(frozen=True)
class Stage:
    """One stage of a run: its ``index`` (0 = first), (height, width) ``size`` in the model's own units
    (pixels or latents), ``scale`` = size / trained size per axis, and the UG levels it runs."""

    index: int
    size: tuple[int, int]
    scale: tuple[float, float]
    ug_levels: tuple[UpsampleGuidanceConfig, ...] = ()

    @property
    def is_upscaled(self) -> bool:
        """Whether the stage is larger than the trained size on some axis (per-call parts act only then)."""
        return max(self.scale) > 1


@dataclass
class Recipe:
    """Which parts a run uses; validates itself. Presets: :meth:`naive`, :meth:`upsample_guidance`,
    :meth:`self_cascade`, :meth:`freescale`; ``a + b`` composes two recipes (the parts each sets).

    Attributes:
        cascade: stage plan and pivot replacement (``None``: one stage at the target).
        ug: Upsample Guidance; in a recipe its spatial ``factor`` is set per stage from the stage's scale
            (``nested_ug``: ×2 nested for square power-of-two scales; a video factor's frame entry is kept), see
            :func:`hiresdiff.methods.upsample_guidance.levels_for_scale`.
        dilation, fusion: FreeScale's restrained dilated convolution and scale fusion.
        positions: :class:`hiresdiff.methods.positions.PositionConfig` — a transformer's position embedding
            rescaled above the trained size (on a transformer, ``dilation`` alone means PI over its window).
        upsamplers: trained :class:`hiresdiff.unet.feature_upsamplers.FeatureUpsamplers` for the stage they
            were trained for (their ``scale``), or one set per stage as ``{scale: upsamplers}`` (e.g. ``{2: a, 4: b}``;
            stages without a set run tuning-free); each a :class:`FeatureUpsamplers` or a folder
            saved with ``save_pretrained``) for the tuned Self-Cascade; needs ``cascade``.
    """

    cascade: Optional[CascadeConfig] = None
    ug: Optional[UpsampleGuidanceConfig] = None
    dilation: Optional[DilationConfig] = None
    fusion: Optional[ScaleFusionConfig] = None
    positions: Optional[PositionConfig] = None
    upsamplers: Union[None, str, Path, Any] = None
    nested_ug: bool = True
    name: str = field(default="", compare=False)

    def __post_init__(self):
        for attr, cls in (
            ("cascade", CascadeConfig),
            ("ug", UpsampleGuidanceConfig),
            ("dilation", DilationConfig),
            ("fusion", ScaleFusionConfig),
            ("positions", PositionConfig),
        ):
            value = getattr(self, attr)
            if value is not None and not isinstance(value, cls):
                raise ValueError(f"{attr} must be a {cls.__name__} or None; got {type(value).__name__}")
        if self.upsamplers is not None and self.cascade is None:
            raise ValueError("upsamplers need a cascade: Recipe(cascade=CascadeConfig(...), upsamplers=...)")
        sets = self.upsamplers.items() if isinstance(self.upsamplers, dict) else [(None, self.upsamplers)]
        for scale, one in sets:
            if scale is not None and not (is_int(scale) and scale >= 2):
                raise ValueError(
                    f"upsamplers: keys are the stages' integer scales (>= 2, e.g. {{2: ..., 4: ...}}); got {scale!r}"
                )
            if isinstance(one, (str, Path)):
                check_upsamplers_folder(Path(one))
        if not self.name:
            self.name = self.describe()

    def for_family(self, flow: bool, video: bool = False) -> Recipe:
        """This recipe with every setting it leaves to the model family filled in (the cascade's ``strength``,
        ``detail_alpha="family"`` and ``space="family"``, dilation's ``until``), for a flow-matching model (``flow``)
        or a diffusion model, of images or ``video``: :mod:`hiresdiff.methods.family_defaults`."""
        defaults = family_defaults(flow)
        changes = {}
        if self.cascade is not None:
            changes["cascade"] = self.cascade.for_family(defaults, video)
        if self.dilation is not None:
            changes["dilation"] = self.dilation.for_family(defaults)
        return dataclasses.replace(self, **changes) if changes else self

    # ---- presets -------------------------------------------------------------------------------
    @classmethod
    def naive(cls) -> Recipe:
        """Plain sampling at the target size."""
        return cls(name="naive")

    @classmethod
    def upsample_guidance(
        cls, theta: float = 1.0, eta: Optional[float] = None, schedule="step", nested: bool = True, **ug
    ) -> Recipe:
        """UG at the target size (Hwang et al.): θ≈1; η by default the model family's, 1.0 for pixel models and
        0.6 for latent ones (the paper's settings)."""
        return cls(
            ug=UpsampleGuidanceConfig(theta=theta, eta=eta, schedule=schedule, **ug), nested_ug=nested, name="ug"
        )

    @classmethod
    def self_cascade(
        cls, strength: Optional[float] = None, upsample: str = "bicubic", upsamplers=None, **cascade
    ) -> Recipe:
        """Self-Cascade: latent-space pivot replacement (tuning-free), with trained ``upsamplers`` the tuned version;
        ``strength`` ``None``: the model family's (:class:`~hiresdiff.methods.self_cascade.CascadeConfig`)."""
        return cls(
            cascade=CascadeConfig(strength=strength, upsample=upsample, space="latent", **cascade),
            upsamplers=upsamplers,
            name="self-cascade" + ("+upsamplers" if upsamplers is not None else ""),
        )

    @classmethod
    def freescale(
        cls,
        detail_alpha=FAMILY,
        strength: Optional[float] = None,
        dilation: bool = True,
        fusion: bool = True,
        space: str = FAMILY,
        ug: Optional[UpsampleGuidanceConfig] = None,
        upsamplers=None,
        **cascade,
    ) -> Recipe:
        """FreeScale: RGB-space cascade (latent for videos: ``space="family"``) with detail control, restrained dilation
        and scale fusion (each switchable);
        ``ug=`` composes it with Upsample Guidance, ``upsamplers=`` with Self-Cascade's upsamplers. ``detail_alpha``,
        ``strength`` and the dilation's window default to the model family's (:mod:`~hiresdiff.methods.family_defaults`:
        the release's α 2, restart 0.7, dilation until 0.7 on diffusion models)."""
        return cls(
            cascade=CascadeConfig(strength=strength, space=space, detail_alpha=detail_alpha, **cascade),
            dilation=DilationConfig() if dilation else None,
            fusion=ScaleFusionConfig() if fusion else None,
            ug=ug,
            upsamplers=upsamplers,
        )

    @classmethod
    def fast(
        cls,
        stage_steps: Optional[int] = None,
        strength: Optional[float] = None,
        target_steps: Optional[int] = None,
        detail_alpha=FAMILY,
        dilation: bool = True,
        fusion: bool = False,
        stage_ratio: Optional[float] = None,
        shared_steps: Optional[bool] = None,
        **cascade,
    ) -> Recipe:
        """Most steps at the trained size, few at every later stage (RectifiedHR's and FreCaS's idea: a refreshed
        noise at each size, few steps where steps are expensive): FreeScale's cascade restarted at ``strength``
        on a grid of ⌈k/strength⌉ steps, so that a later stage runs k of them — ``stage_steps`` in the stages
        between, ``target_steps`` (default ``stage_steps``) at the target. The stages share the call's steps
        (``shared_steps``): stage 0 runs what the later stages leave, so the recipe never makes more denoiser calls
        than plain sampling at the same ``steps``; a few-step call gives each later stage fewer steps (at least
        one), jumps to the target in one stage when steps are fewer than stages, and is plain sampling at 1 step.
        ``shared_steps=False`` runs stage 0 with all the call's steps instead (it is then the plain trained-size
        sample of the same seed).

        The defaults are the point measured best for its cost: ``stage_steps`` :data:`FAST_STAGE_STEPS` from
        ``strength`` :data:`FAST_STRENGTH`, doubling (``stage_ratio`` 2), shared steps (``hiresdiff bench --suite
        fast``, README "Fast"); with a super-resolution ``upscaler`` (``cascade``'s), one jump to the target
        (``stage_ratio`` ∞) refined by :data:`FAST_SR_STAGE_STEPS` step from :data:`FAST_SR_STRENGTH` after the
        trained-size sample with all the call's steps (``shared_steps`` False), which beats the doubling recipe with
        the same network on semantic agreement, FD, the finest SWD and FLOPs on all three owned models at 4×
        (``hiresdiff bench --suite refine``)."""
        sr = cascade.get("upscaler") is not None
        stage_steps = stage_steps if stage_steps is not None else FAST_SR_STAGE_STEPS if sr else FAST_STAGE_STEPS
        strength = strength if strength is not None else FAST_SR_STRENGTH if sr else FAST_STRENGTH
        stage_ratio = stage_ratio if stage_ratio is not None else math.inf if sr else 2.0
        shared_steps = shared_steps if shared_steps is not None else not sr
        target_steps = stage_steps if target_steps is None else target_steps
        for name, value in (("stage_steps", stage_steps), ("target_steps", target_steps)):
            check_positive_int(value, name)
        check_strength(strength)

        def grid(k: int) -> int:
            return math.ceil(k / strength - 1e-9)

        return cls(
            cascade=CascadeConfig(
                strength=strength,
                steps=grid(stage_steps),
                target_steps=grid(target_steps),
                space=FAMILY,
                detail_alpha=detail_alpha,
                stage_ratio=stage_ratio,
                shared_steps=shared_steps,
                **cascade,
            ),
            dilation=DilationConfig() if dilation else None,
            fusion=ScaleFusionConfig() if fusion else None,
            name="fast",
        )

    @classmethod
    def preset(cls, name: str) -> Recipe:
        """A preset by name (``PRESETS``); ``"a+b"`` composes presets (``"freescale+ug"``)."""
        parts = [p.strip() for p in name.split("+")]
        builders = {
            "naive": cls.naive,
            "ug": cls.upsample_guidance,
            "self-cascade": cls.self_cascade,
            "freescale": cls.freescale,
            "fast": cls.fast,
        }
        unknown = [p for p in parts if p not in builders]
        if unknown or not parts:
            raise ValueError(f"method must be one of {PRESETS} or a '+'-composition of them; got {name!r}")
        repeated = sorted({p for p in parts if parts.count(p) > 1})
        if repeated:
            raise ValueError(f"method {name!r} composes {', '.join(repeated)} with itself: name each preset once")
        recipe = builders[parts[0]]()
        for part in parts[1:]:
            recipe = recipe + builders[part]()
        return dataclasses.replace(recipe, name=name)

    def __add__(self, other: Recipe) -> Recipe:
        """The parts set in either recipe; a part set in both must be equal (``ValueError`` names it)."""
        merged = {}
        for f in dataclasses.fields(self):
            if f.name in ("name", "nested_ug"):
                continue
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine is not None and theirs is not None and mine != theirs:
                raise ValueError(f"cannot compose: both recipes set {f.name} differently")
            merged[f.name] = mine if mine is not None else theirs
        return Recipe(**merged, nested_ug=self.nested_ug and other.nested_ug, name=f"{self.name}+{other.name}")

    def describe(self) -> str:
        """A short label naming the parts set."""
        parts = [
            n
            for n in ("cascade", "ug", "dilation", "fusion", "positions", "upsamplers")
            if getattr(self, n) is not None
        ]
        return "+".join(parts) or "naive"

    # ---- the stage plan ------------------------------------------------------------------------
    def stages(self, trained: Sequence[int], target: Sequence[int], multiple: int = 1) -> list[Stage]:
        """The stages from ``trained`` (h₀, w₀) to ``target`` (H, W), in the model's units, sizes multiples of
        ``multiple``. Raises ``ValueError`` (naming the parameter) before any model call for targets the
        recipe cannot make."""
        h0, w0 = trained
        sizes = (
            stage_sizes(trained, target, multiple, self.cascade.stage_ratio)
            if self.cascade is not None
            else [check_size(target, multiple)]
        )
        out = []
        for index, (h, w) in enumerate(sizes):
            scale = (h / h0, w / w0)
            levels = levels_for_scale(self.ug, scale, self.nested_ug) if self.ug is not None and min(scale) >= 1 else []
            out.append(Stage(index, (h, w), scale, tuple(levels)))
        return out


def check_upsamplers_folder(folder: Path) -> None:
    """``ValueError`` naming ``upsamplers`` and the file unless ``folder`` holds FeatureUpsamplers saved with
    ``save_pretrained`` (their config and a weights file): checked when the recipe is made, before any model loads."""
    config = folder / "config.json"
    if not folder.is_dir() or not config.is_file():
        raise ValueError(f"upsamplers path {str(folder)!r} is not a folder saved with save_pretrained (no config.json)")
    try:
        class_name = json.loads(config.read_text()).get("_class_name")
    except (ValueError, AttributeError):
        raise ValueError(f"upsamplers: {config} is not a JSON object") from None
    if class_name != "FeatureUpsamplers":
        raise ValueError(f"upsamplers: {config} describes a {class_name!r}, not FeatureUpsamplers")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise ValueError(f"upsamplers: {folder} has no weights file (diffusion_pytorch_model.safetensors)")


def as_recipe(recipe) -> Recipe:
    """A :class:`Recipe`, or a preset name (``"freescale+ug"``) made into one; ``ValueError`` naming ``recipe``
    otherwise."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str):
        return Recipe.preset(recipe)
    raise ValueError(f"recipe must be a Recipe or a preset name such as 'freescale'; got {type(recipe).__name__}")


def stages_after(stages: Sequence[Stage], size: Sequence[int]) -> list[Stage]:
    """The stages after the one of ``size`` (an existing image standing in for that stage's result).

    Raises ``ValueError`` naming the image when ``size`` is not a stage size below the target (a recipe
    without a cascade has none).
    """
    below = [tuple(s.size) for s in stages[:-1]]
    if tuple(size) not in below:
        raise ValueError(
            f"image size {tuple(size)} must be one of the cascade's stage sizes below the target, {below} "
            "(in the model's units; a recipe without a cascade has none): resize it to the trained size"
        )
    return list(stages[below.index(tuple(size)) + 1 :])
