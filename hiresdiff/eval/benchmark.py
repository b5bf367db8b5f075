"""The benchmarks against held-out real emoji: the Upsample Guidance reproduction and every method on the
embedded pixel model (suites ``ug``, ``methods``), and every method on the emoji-latent text-to-image pipeline
through :func:`hiresdiff.generate` (suite ``latent``: the prompt of each sample is the name of the held-out emoji
it is compared with).

Every method gets the same seeds, the same class labels and the same resolution-consistent noise
(drawn at the largest size, reduced with √k·D), and is compared with held-out real emoji at the
same size. Methods at each scale m: naive sampling at m×; the trained-size samples enlarged
(bicubic, nearest); UG over a θ sweep at η = 1, a few η at θ = 1, the linear weight schedule, ×2
guidance nested at power-of-two scales above 2, and the ablations of eq. 3 (without τ, without
1/√P, without both). Scales above 2× get fewer images (same pixel count as 2×).

Metrics: sliced Wasserstein distance on Laplacian-pyramid patches, Fréchet distance and KID in
the download-free random-conv feature space (and Inception-v3 FID when a weights file is given),
the fine-detail energy relative to real images (grain > 1, blur < 1), and the paired
cross-resolution consistency RMSE(D[m× sample], trained-size sample).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hiresdiff.core.noise import lowres_noise
from hiresdiff.cost.plan import enlargement_relative_flops, relative_flops
from hiresdiff.data import emoji
from hiresdiff.denoisers.registry import family_of, find_denoiser
from hiresdiff.eval import metrics
from hiresdiff.eval.report import markdown_table, quality_time_plot, theta_plot
from hiresdiff.grid import labelled_grid, save_image
from hiresdiff.loading.pipelines import load_pipeline
from hiresdiff.loading.pixel_model import initial_noise, load_pixel_model, sample, to_pil
from hiresdiff.loading.pixel_pipeline import PixelPipeline
from hiresdiff.loading.upscaler import load_upscaler
from hiresdiff.methods.family_defaults import FLOW
from hiresdiff.methods.positions import PositionConfig
from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig, is_power_of_two
from hiresdiff.models import EMBEDDED_MODEL_DIR, is_pipeline, shipped_stage_lora
from hiresdiff.recipe import FAST_STAGE_STEPS, FAST_STRENGTH, Recipe
from hiresdiff.sampling.generate import generate
from hiresdiff.sampling.schedulers import make_scheduler


@dataclass(frozen=True)
class Method:
    """One way to get images at ``scale``× the trained size: a recipe, or enlarging the trained-size samples."""

    name: str
    scale: int
    recipe: Optional[Recipe] = None  # None: enlarge the trained-size samples with ``resize``
    resize: Union[str, Callable, None] = None  # "bicubic", "nearest" or an upscaler (images, size) → images
    theta: Optional[float] = None  # θ for the UG sweep plot (0 = naive)
    call: tuple = ()  # pipelines: extra call arguments as (name, value) pairs, e.g. (("guidance_scale", 1.0),)
    tiled_vae: bool = False  # pipelines: decode with the tiled VAE
    same_as: Optional[str] = None  # tiled VAE: the untiled method of the same seeds; their RMSE is reported


def ug_method(name: str, scale: int, theta: float = 1.0, nested: bool = False, eta: float = 1.0, **ug) -> Method:
    """UG toward the trained size, one level of factor ``scale`` unless ``nested`` (×2 levels); η = 1 (every
    step, the pixel model's setting) unless given."""
    return Method(
        name, scale, Recipe(ug=UpsampleGuidanceConfig(theta=theta, eta=eta, **ug), nested_ug=nested), theta=theta
    )


def baselines(scale: int) -> list[Method]:
    return [
        Method(f"naive {scale}x", scale, Recipe.naive(), theta=0.0),
        Method(f"bicubic 1x->{scale}x", scale, resize="bicubic"),
        Method(f"nearest 1x->{scale}x", scale, resize="nearest"),
    ]


def methods_for(scale: int, thetas, etas, ablations: bool = True, linear_thetas=(1.0,)) -> list[Method]:
    """The UG reproduction set at one scale (θ = 0 is naive, so the sweep starts above it).

    UG over ``thetas`` (step schedule, η = 1), θ = 1 at each η < 1 in ``etas``, the linear schedule at
    ``linear_thetas``, at power-of-two scales above 2 also ×2 guidance nested (θ = 1), and the ablations.
    """
    out = baselines(scale)
    out += [ug_method(f"UG θ={t:g}", scale, t) for t in thetas if t > 0]
    out += [ug_method(f"UG θ=1 η={e:g}", scale, 1.0, eta=e) for e in etas if e < 1]
    out += [ug_method(f"UG θ={t:g} linear", scale, t, schedule="linear") for t in linear_thetas]
    if scale > 2 and is_power_of_two(scale):
        out += [ug_method("UG θ=1 ×2 nested", scale, 1.0, nested=True)]
    if ablations:
        out += [
            ug_method("UG θ=1 without τ", scale, adjust_time=False),
            ug_method("UG θ=1 without 1/√P", scale, adjust_power=False),
            ug_method("UG θ=1 without both", scale, adjust_time=False, adjust_power=False),
        ]
    return out


def cascade_methods_for(scale: int, strengths=(0.5, 0.7, 0.9), upsamplers=None, alphas=(1.0, 2.0, 3.0)) -> list[Method]:
    """Every preset and composition at one scale, with Self-Cascade's strength sweep, the tuned Self-Cascade
    (``upsamplers``: a folder, which serves the stage it was trained for, or a table {stage scale: folder} used
    as it is, see :class:`~hiresdiff.recipe.Recipe`) and FreeScale's ablations."""
    ug = UpsampleGuidanceConfig()
    out = baselines(scale) + [Method("UG θ=1 (×2 nested)", scale, Recipe.upsample_guidance(), theta=1.0)]
    out += [Method(f"Self-Cascade s={s:g}", scale, Recipe.self_cascade(strength=s)) for s in strengths]
    if upsamplers:
        out += [Method("Self-Cascade tuned", scale, Recipe.self_cascade(upsamplers=upsamplers))]
    out += [
        Method("FreeScale", scale, Recipe.freescale()),
        Method("FreeScale without dilation", scale, Recipe.freescale(dilation=False)),
        Method("FreeScale without fusion", scale, Recipe.freescale(fusion=False)),
        Method("FreeScale without detail control", scale, Recipe.freescale(detail_alpha=None)),
        Method("FreeScale latent φ", scale, Recipe.freescale(space="latent")),
    ]
    out += [Method(f"FreeScale α={a:g}", scale, Recipe.freescale(detail_alpha=a)) for a in alphas if a != 2.0]
    out += [
        Method("FreeScale+UG", scale, Recipe.freescale(ug=ug)),
        Method("Self-Cascade+UG", scale, Recipe.self_cascade() + Recipe(ug=ug)),
    ]
    return out


def pipeline_rows(scale: int) -> list[Method]:
    """The rows both pipeline suites share: FreeScale without fusion / detail control, the compositions with UG at
    the model family's η (0.6 latent UNets, 1 flow: at 0.6 a flow cascade's later stages, which restart at step
    fraction 0.7, would never be guided), and CFG 1 for naive and FreeScale."""
    ug = UpsampleGuidanceConfig()
    return [
        Method("FreeScale without fusion", scale, Recipe.freescale(fusion=False)),
        Method("FreeScale without detail control", scale, Recipe.freescale(detail_alpha=None)),
        Method("FreeScale+UG", scale, Recipe.freescale(ug=ug)),
        Method("Self-Cascade+UG", scale, Recipe.self_cascade() + Recipe(ug=ug)),
        Method(f"naive {scale}x CFG 1", scale, Recipe.naive(), call=(("guidance_scale", 1.0),)),
        Method("FreeScale CFG 1", scale, Recipe.freescale(), call=(("guidance_scale", 1.0),)),
    ]


def latent_methods_for(scale: int, upsamplers=None, etas=(1.0, 0.6, 0.3)) -> list[Method]:
    """The latent-pipeline set at one scale: the baselines, UG at each η (the latent question: (θ, η) ≈ (1, 0.6)),
    Self-Cascade tuning-free and tuned, FreeScale with RGB vs latent φ and its other ablations, the compositions,
    CFG scale 1 against the pipeline's default, and the tiled VAE against the whole-image one."""
    out = baselines(scale) + [
        Method(f"UG θ=1 η={e:g}", scale, Recipe.upsample_guidance(eta=e), theta=1.0) for e in etas
    ]
    out += [Method("Self-Cascade", scale, Recipe.self_cascade())]
    if upsamplers:
        out += [Method("Self-Cascade tuned", scale, Recipe.self_cascade(upsamplers=upsamplers))]
    out += [
        Method("FreeScale (RGB φ)", scale, Recipe.freescale()),
        Method("FreeScale latent φ", scale, Recipe.freescale(space="latent")),
        Method("FreeScale without dilation", scale, Recipe.freescale(dilation=False)),
    ]
    out += pipeline_rows(scale)
    out += [
        Method(f"naive {scale}x tiled VAE", scale, Recipe.naive(), tiled_vae=True, same_as=f"naive {scale}x"),
        Method("FreeScale tiled VAE", scale, Recipe.freescale(), tiled_vae=True, same_as="FreeScale (RGB φ)"),
    ]
    return out


def flow_methods_for(scale: int, etas=(1.0, 0.6, 0.3)) -> list[Method]:
    """The flow-transformer set at one scale (FLUX, SD3): the baselines, UG for rectified flow at each η, each position
    rescaling alone, Self-Cascade, FreeScale (its dilation is PI over the early window) with each rescaling, latent
    φ, the stage-size shift instead of the trained size's, its other ablations, the compositions, and CFG 1."""
    out = baselines(scale) + [
        Method(f"UG θ=1 η={e:g}", scale, Recipe.upsample_guidance(eta=e), theta=1.0) for e in etas
    ]
    out += [
        Method(f"naive {scale}x + {label}", scale, Recipe(positions=PositionConfig(method, attention=attention)))
        for label, method, attention in (
            ("PI", "pi", None),
            ("NTK", "ntk", None),
            ("YaRN", "yarn", None),
            ("PI + entropy", "pi", "entropy"),
        )
    ]
    out += [
        Method("Self-Cascade", scale, Recipe.self_cascade()),
        Method("FreeScale (RGB φ, PI)", scale, Recipe.freescale()),
        Method("FreeScale latent φ", scale, Recipe.freescale(space="latent")),
        Method("FreeScale, pipeline shift", scale, Recipe.freescale(), call=(("shift", "pipeline"),)),
        Method("Self-Cascade, pipeline shift", scale, Recipe.self_cascade(), call=(("shift", "pipeline"),)),
        Method("FreeScale NTK", scale, Recipe.freescale() + Recipe(positions=PositionConfig("ntk", until=FLOW.until))),
        Method(
            "FreeScale YaRN", scale, Recipe.freescale() + Recipe(positions=PositionConfig("yarn", until=FLOW.until))
        ),
        Method("FreeScale without positions", scale, Recipe.freescale(dilation=False)),
    ]
    return out + pipeline_rows(scale)


def fast_methods_for(scale: int) -> list[Method]:
    """The fast recipe's design space at one scale, with every preset as the reference it must beat: the steps a
    later stage runs (2, 3, 4) and its restart strength (0.3, 0.5), with FreeScale's detail control and dilation
    (and without: a plain cascade; with fusion), and one jump from the trained size to the target (enlarge, then
    refine in a few steps) instead of doubling."""
    out = baselines(scale) + [
        Method("UG", scale, Recipe.upsample_guidance(), theta=1.0),
        Method("Self-Cascade", scale, Recipe.self_cascade()),
        Method("FreeScale", scale, Recipe.freescale()),
        Method("FreeScale+UG", scale, Recipe.freescale(ug=UpsampleGuidanceConfig())),
    ]
    out += [
        Method(f"fast k={k} s={s:g}", scale, Recipe.fast(stage_steps=k, strength=s))
        for k in (2, 3, 4)
        for s in (0.3, 0.5)
    ]
    out += [
        Method("fast k=3 s=0.5 plain cascade", scale, Recipe.fast(3, 0.5, detail_alpha=None, dilation=False)),
        Method("fast k=3 s=0.5 with fusion", scale, Recipe.fast(3, 0.5, fusion=True)),
        Method("fast k=3 s=0.5 one jump", scale, Recipe.fast(3, 0.5, stage_ratio=scale)),
    ]
    return out


def headline_methods_for(scale: int, upsamplers=None) -> list[Method]:
    """The presets a user picks by name (``--method``), as they run by default, and the enlargements they must beat:
    the rows the README's recommendations rest on, with the tuned Self-Cascade when ``upsamplers`` are given."""
    out = baselines(scale) + [
        Method(name, scale, Recipe.preset(preset), theta=1.0 if preset == "ug" else None)
        for name, preset in (("UG", "ug"), ("Self-Cascade", "self-cascade"))
    ]
    if upsamplers:
        out += [Method("Self-Cascade tuned", scale, Recipe.self_cascade(upsamplers=upsamplers))]
    return out + [
        Method(name, scale, Recipe.preset(preset))
        for name, preset in (
            ("FreeScale", "freescale"),
            ("FreeScale+UG", "freescale+ug"),
            ("fast", "fast"),
            ("fast+UG", "fast+ug"),
        )
    ]


def shift_methods_for(scale: int, policies=("trained", "pipeline", "resolution")) -> list[Method]:
    """A flow model's shift policies (``shift=``, :mod:`hiresdiff.methods.flow_shift`) under every preset they apply
    to — naive and UG at the target size, Self-Cascade, FreeScale, fast+UG — against the enlargements: the
    measurement that chooses :data:`~hiresdiff.methods.flow_shift.DEFAULT_SHIFT`."""
    out = [m for m in baselines(scale) if m.recipe is None]
    for name, preset in (
        (f"naive {scale}x", "naive"),
        ("UG", "ug"),
        ("Self-Cascade", "self-cascade"),
        ("FreeScale", "freescale"),
        ("fast+UG", "fast+ug"),
    ):
        out += [
            Method(
                f"{name}, shift {policy}",
                scale,
                Recipe.preset(preset),
                theta={"naive": 0.0, "ug": 1.0}.get(preset),
                call=(("shift", policy),),
            )
            for policy in policies
        ]
    return out


def strength_methods_for(scale: int, strengths=(0.3, 0.4, 0.5, 0.7)) -> list[Method]:
    """Self-Cascade and FreeScale at each restart strength against naive and the enlargements: the measurement that
    chooses a model family's default strength (:data:`~hiresdiff.methods.family_defaults.FLOW`)."""
    return baselines(scale) + [
        Method(f"{name} s={s:g}", scale, build(strength=s))
        for name, build in (("Self-Cascade", Recipe.self_cascade), ("FreeScale", Recipe.freescale))
        for s in strengths
    ]


def inversion_methods_for(scale: int, shares=(0.0, 0.2, 0.5)) -> list[Method]:
    """The restart by inversion (``CascadeConfig(inversion=γ)``) against the fresh-noise restart it replaces, in the
    fast recipe and in Self-Cascade, with FreeScale and the enlargements as the references: fresh noise's share γ 0
    (pure inversion), 0.2, 0.5."""
    out = baselines(scale) + [
        Method("FreeScale", scale, Recipe.freescale()),
        Method("Self-Cascade", scale, Recipe.self_cascade()),
        Method("Self-Cascade inversion γ=0.2", scale, Recipe.self_cascade(inversion=0.2)),
        Method("fast", scale, Recipe.fast()),
    ]
    return out + [Method(f"fast inversion γ={share:g}", scale, Recipe.fast(inversion=share)) for share in shares]


def one_jump(scale: int, k: int, s: float, upscaler: Optional[Callable], **options) -> Recipe:
    """The trained-size sample with all the call's steps, enlarged to ``scale``× in one jump by ``upscaler`` (``None``:
    bicubic), then ``k`` steps from strength ``s``: the jump rows of the sr and refine suites."""
    return Recipe.fast(k, s, stage_ratio=scale, upscaler=upscaler, shared_steps=False, **options)


def sr_methods_for(scale: int, upscaler: Callable) -> list[Method]:
    """A super-resolution network as φ (``upscaler``) in the fast recipe, against SR alone (the plain upscale a user
    already has), FreeScale and the fast recipe it would replace: doubling stages, and one jump from the trained
    size to the target refined in k = 1 or 2 steps from strength 0.2 or 0.4 (with FreeScale's detail control and
    dilation, the fast recipe's defaults, and without them), and the jump restarted from the inversion (γ = 0.5).
    The jumps run stage 0 with all the steps (``shared_steps=False``): it is then the trained-size sample that
    SR alone enlarges, and the rows differ only in what follows it."""

    def jump(k: int, s: float, **options) -> Recipe:
        return one_jump(scale, k, s, upscaler, **options)

    out = baselines(scale) + [
        Method("FreeScale", scale, Recipe.freescale()),
        Method("FreeScale+UG", scale, Recipe.freescale(ug=UpsampleGuidanceConfig())),
        Method("fast", scale, Recipe.fast()),
        Method(  # the doubling recipe with the network as φ (the measurement that chose fast's SR defaults)
            "fast SR",
            scale,
            Recipe.fast(FAST_STAGE_STEPS, FAST_STRENGTH, stage_ratio=2.0, shared_steps=True, upscaler=upscaler),
        ),
    ]
    out += [Method(f"SR jump k={k} s={s:g}", scale, jump(k, s)) for k in (1, 2) for s in (0.2, 0.4)]
    return out + [
        Method("SR jump k=2 s=0.4 plain", scale, jump(2, 0.4, detail_alpha=None, dilation=False)),
        Method("SR jump k=2 s=0.4 inversion γ=0.5", scale, jump(2, 0.4, inversion=0.5)),
    ]


def refine_methods_for(scale: int, upscaler: Callable, stage_lora: Optional[str] = None) -> list[Method]:
    """How to refine the SR jump (the trained-size sample enlarged by ``upscaler`` in one jump, then k steps from
    strength s) so that it adds detail without repainting the picture: k = 1 from s = 0.1 and 0.2 on the whole image,
    in feathered tiles of the trained size (overlap 0.25), and in tiles with UG's whole-image call as the global
    signal; with a few-step ``stage_lora`` (its LCM scheduler), k = 1 and 2 from 0.3 and 0.5; and the same jump
    from a bicubic enlargement (no SR network: what ``fast`` could default to without the extra). Against the
    enlargements and SR alone; naive and FreeScale are the sr suite's rows at the same seeds (the same images) and
    are not re-run."""

    def jump(k: int, s: float, ug: bool = False, **options) -> Recipe:
        recipe = one_jump(scale, k, s, options.pop("upscaler", upscaler), **options)
        return recipe + Recipe.upsample_guidance() if ug else recipe

    out = baselines(scale)[1:]  # the enlargements
    out += [Method(f"bicubic jump k={k} s={s:g}", scale, jump(k, s, upscaler=None)) for k, s in ((1, 0.2), (2, 0.4))]
    for s in (0.1, 0.2):
        out += [
            Method(f"SR jump k=1 s={s:g}", scale, jump(1, s)),
            Method(f"SR jump k=1 s={s:g} tiles", scale, jump(1, s, tiles=0.25)),
            Method(f"SR jump k=1 s={s:g} tiles+UG", scale, jump(1, s, ug=True, tiles=0.25)),
        ]
    if stage_lora is not None:
        out += [
            Method(f"SR jump LCM k={k} s={s:g}", scale, jump(k, s, stage_lora=stage_lora, stage_scheduler="lcm"))
            for k in (1, 2)
            for s in (0.3, 0.5)
        ]
    return out


def with_sr_alone(jobs: list[Method], upscaler: Optional[Callable]) -> list[Method]:
    """``jobs`` with an "SR alone" row (the trained-size samples enlarged by ``upscaler``) after each scale's
    nearest enlargement; ``jobs`` as they are without an upscaler."""
    if upscaler is None:
        return jobs
    out = []
    for method in jobs:
        out.append(method)
        if method.recipe is None and method.resize == "nearest":
            out.append(Method(f"SR alone 1x->{method.scale}x", method.scale, resize=upscaler))
    return out


SUITES = ("ug", "methods", "latent", "fast", "headline", "shift", "strength", "inversion", "sr", "refine")
#: Suites with ``num_images`` at every scale: their intervals must separate the differences they state.
FULL_COUNT_SUITES = ("headline", "shift", "strength", "inversion", "sr", "refine")
#: Suites that need an upscaler (``Settings.upscaler``).
SR_SUITES = ("sr", "refine")
#: Suites that any model runs (the others are for pixel models or for pipelines only).
EVERY_MODEL_SUITES = ("fast", *FULL_COUNT_SUITES)


@dataclass
class Settings:
    model: Optional[str] = None
    data: Optional[str] = None
    num_images: int = 96
    steps: int = 20
    scheduler: str = "sde-dpm++"
    seed: int = 0
    scales: tuple = (2, 4)
    thetas: tuple = (0.25, 0.5, 1.0, 1.5, 2.0)
    thetas_4x: tuple = (0.5, 1.0, 1.5)
    etas: tuple = (0.6,)
    linear_thetas: tuple = (1.0,)
    batch_size: int = 8  # small batches stay in cache: 1.6x faster per image than 64 on this CPU
    grid_rows: int = 8
    inception: Optional[str] = None
    out_dir: str = "benchmarks/results"
    command: str = ""
    suite: str = "ug"  # "ug": the UG reproduction rows; "methods": every preset, composition and ablation
    strengths: tuple = (0.5, 0.7, 0.9)
    upsamplers: Optional[dict] = None  # {stage scale: folder} of trained feature upsamplers for the tuned Self-Cascade
    upscaler: Optional[str] = None  # a super-resolution model file: "SR alone" rows everywhere, φ in the sr suite
    guidance_scale: Optional[float] = (
        None  # pipelines' CFG (None: the model's recommended, else 7.5; an undistilled FLUX: true_cfg_scale)
    )

    def __post_init__(self):
        if self.suite not in SUITES:
            raise ValueError(f"suite must be one of {SUITES}; got {self.suite!r}")
        if self.suite in SR_SUITES and self.upscaler is None:
            raise ValueError(
                f"suite {self.suite!r} needs an upscaler (a super-resolution model file, e.g. the shipped emoji_sr)"
            )

    def images_at(self, scale: int) -> int:
        """Images per method at ``scale``×: ``num_images`` up to 2× (and at every scale in the headline, shift,
        strength and inversion suites, whose intervals must separate the differences they state),
        ``num_images·4/scale²`` above (same pixel count)."""
        if scale <= 2 or self.suite in FULL_COUNT_SUITES:
            return self.num_images
        return max(2, self.num_images * 4 // scale**2)

    @classmethod
    def quick(cls, **overrides) -> Settings:
        """A smoke-test configuration: few images, 2 steps, one θ and η, 2× only."""
        return cls(
            **{
                "num_images": 8,
                "steps": 2,
                "scales": (2,),
                "thetas": (1.0,),
                "etas": (0.6,),
                "grid_rows": 2,
                **overrides,
            }
        )


def sample_batched(
    unet, scheduler, noise, labels, recipe: Optional[Recipe], size, steps, batch_size, seed, noise_size=None
) -> torch.Tensor:
    """Samples of ``size`` (h, w) from the given first-stage noise in batches (batch i seeded with ``seed + i``
    for stochastic schedulers, whose per-step noise is drawn at ``noise_size`` and reduced, as the initial
    noise was). A cascade's first stage is therefore the trained-size sample of the same batch."""
    h, w = size
    parts = []
    for i in range(0, len(noise), batch_size):
        lab = None if labels is None else labels[i : i + batch_size]
        parts.append(
            sample(
                unet,
                scheduler,
                height=h,
                width=w,
                num_images=len(noise[i : i + batch_size]),
                seed=seed + i,
                steps=steps,
                recipe=recipe,
                class_labels=lab,
                noise=noise[i : i + batch_size],
                noise_size=noise_size,
                progress=False,
            )
        )
    return torch.cat(parts)


def enlarge(images: torch.Tensor, scale: int, mode) -> torch.Tensor:
    """``images`` ``scale`` times larger by interpolation (``mode`` "bicubic" or "nearest") or an upscaler (a
    callable ``mode(images, size)``)."""
    if callable(mode):
        return mode(images, tuple(n * scale for n in images.shape[-2:]))
    kwargs = {"align_corners": False} if mode == "bicubic" else {}
    return F.interpolate(images, scale_factor=scale, mode=mode, **kwargs).clamp(-1, 1)


def real_side(real: torch.Tensor, features, cache: Optional[dict] = None) -> dict:
    """The real images' part of every metric of :func:`score`: their random-conv features, the features of their 32²
    crops (above 32²) and their detail energy. It is the same for every method of a size and for both halves of a
    set, so a caller that keeps ``cache`` (one dict per real set) computes it once."""
    if cache is not None and cache.get("real") is real:
        return cache
    side = {
        "real": real,
        "features": features(real),
        "crop features": metrics.crop_features(real, 32, seed=1).flatten(0, 1) if real.shape[-1] > 32 else None,
        "detail": metrics.detail_energy(real),
    }
    if cache is not None:
        cache.update(side)
    return side


def score(
    images,
    real,
    trained,
    features,
    inception=None,
    intervals: Optional[dict] = None,
    condition: Optional[dict] = None,
    real_cache: Optional[dict] = None,
) -> dict:
    """All metrics of one image set against real images of its size and its trained-size partners (``real`` and
    ``features`` ``None`` above the data set's sizes: only the metrics against the partners and the condition).

    Besides the whole-image metrics: ``semantic``, the fraction whose predicted emoji subgroup is their trained-size
    sample's (:func:`~hiresdiff.eval.metrics.semantic.semantic_agreement`); with ``condition`` (what each image was
    asked for: ``{"subgroups": indices}`` for a prompt's emoji, ``{"groups": names}`` for a class label) ``condition``,
    the fraction whose prediction matches it; above 32² ``crop FD``, the distance of 32² crops to crops of the real
    images (detail at the native scale). ``intervals`` (a dict) receives the 95 %
    bootstrap intervals over images of every metric that is a statistic of per-image values (FD rand and crop FD
    against the real images' fixed statistics, :func:`~hiresdiff.eval.metrics.frechet.frechet_distance_to`; detail,
    paired RMSE, semantic, condition), and from 8 images on, under ``"<metric> by set"``, every metric on each half
    of the images: two disjoint image sets with their own noise seeds, whose difference shows what another draw
    changes. ``real_cache``: a dict kept for one real set, which holds :func:`real_side` after the first call."""
    out, feats_gen, side = {}, None, None
    if real is not None:
        side = real_side(real, features, real_cache)
        feats_gen, feats_real = features(images), side["features"]
        out.update({f"SWD {k}": v for k, v in metrics.sliced_wasserstein(images, real).items()})
        out["FD rand"] = metrics.frechet_distance(feats_gen, feats_real)
        out["KID rand ×1e3"] = (
            1e3 * metrics.kernel_inception_distance(feats_gen, feats_real, subset_size=100, num_subsets=50).mean
        )
        if inception is not None:
            out["FID"] = metrics.fid(images, real, inception)
        out["detail ×real"] = metrics.detail_energy(images) / side["detail"]
    out["paired RMSE"] = metrics.median_paired_rmse(images, trained) if trained is not None else float("nan")
    if images.shape[-1] > 32 and real is not None:  # 32² crops of each image and of the real ones (seed 1)
        out["crop FD"] = metrics.frechet_distance(
            metrics.crop_features(images, 32).flatten(0, 1), side["crop features"]
        )
    if trained is not None:
        out["semantic"] = metrics.semantic_agreement(images, trained)
    if condition is not None:
        out["condition"] = metrics.condition_agreement(images, **condition)
    if intervals is None or len(images) < 2:
        return out
    for name, statistic in per_image_statistics(images, side, trained, feats_gen, condition).items():
        interval = metrics.bootstrap(statistic, len(images))
        intervals[name] = (interval.low, interval.high)
    if len(images) >= 8:
        halves = torch.arange(len(images)).chunk(2)
        by_set = [
            score(
                images[h],
                real,
                None if trained is None else trained[h],
                features,
                inception,
                condition=None if condition is None else _subset(condition, h),
                real_cache=side,
            )
            for h in halves
        ]
        intervals.update({f"{name} by set": tuple(one[name] for one in by_set) for name in out})
    return out


def _subset(condition: dict, indices: torch.Tensor) -> dict:
    """The ``condition`` of :func:`score` for the images at ``indices``."""
    return {kind: [values[i] for i in indices.tolist()] for kind, values in condition.items()}


def per_image_statistics(images, side: Optional[dict], trained, feats_gen, condition: Optional[dict] = None) -> dict:
    """The metrics of :func:`score` that are statistics of per-image values, each as ``f(indices) -> value`` for the
    bootstrap (the real images' side, :func:`real_side`, held fixed; without it those against the partners and the
    condition)."""
    out = {}
    if side is not None:
        mu_real, sigma_real = metrics.gaussian_stats(side["features"])
        energies = metrics.detail_energies(images)
        out["FD rand"] = lambda idx: metrics.frechet_distance_to(feats_gen[idx], mu_real, sigma_real)
        out["detail ×real"] = lambda idx: float(energies[idx].mean()) / side["detail"]
    if images.shape[-1] > 32 and side is not None:
        crops_gen = metrics.crop_features(images, 32)
        mu_crops, sigma_crops = metrics.gaussian_stats(side["crop features"])
        out["crop FD"] = lambda idx: metrics.frechet_distance_to(crops_gen[idx].flatten(0, 1), mu_crops, sigma_crops)
    if trained is not None:
        rmse, same = metrics.paired_rmse(images, trained), metrics.semantic_matches(images, trained)
        out["paired RMSE"] = lambda idx: float(torch.quantile(rmse[idx].double(), 0.5))
        out["semantic"] = lambda idx: float(same[idx].float().mean())
    if condition is not None:
        asked = metrics.condition_matches(images, **condition)
        out["condition"] = lambda idx: float(asked[idx].float().mean())
    return out


class PixelSampler:
    """Samples of a pixel ``UNet2DModel`` from resolution-consistent noise drawn at the largest size ``big``: every
    method of one seed starts from the same noise, reduced to its first stage's size."""

    def __init__(self, settings: Settings, pick: torch.Tensor, test_labels: torch.Tensor, big: int):
        self.unet, self.scheduler = load_pixel_model(settings.model or _embedded(), settings.scheduler)
        self.settings, self.big = settings, big
        self.labels = test_labels[pick] if self.unet.config.num_class_embeds else None
        self.noise = initial_noise(len(pick), 3, big, big, settings.seed)

    def sample(self, method: Optional[Method], res: int, count: int) -> torch.Tensor:
        recipe = None if method is None else method.recipe
        first = 32 if recipe is None else recipe.stages((32, 32), (res, res), 4)[0].size[0]
        labels = None if self.labels is None else self.labels[:count]
        return sample_batched(
            self.unet,
            self.scheduler,
            lowres_noise(self.noise[:count], self.big // first),
            labels,
            recipe,
            (res, res),
            self.settings.steps,
            self.settings.batch_size,
            self.settings.seed,
            (self.big, self.big),
        )

    def relative_flops(self, method: Method, res: int) -> float:
        """The method's FLOPs over direct sampling's at ``res``² (counted on ``meta``)."""
        labels = {} if self.labels is None else {"class_labels": self.labels[:1]}
        pipe, call = PixelPipeline(self.unet, self.scheduler), {"output_type": "latent", **labels}
        return method_flops(pipe, method, res, self.settings.steps, call)


def method_flops(pipe, method: Method, res: int, steps: int, call: dict) -> float:
    """``method``'s FLOPs over direct sampling's at ``res``² for ``pipe``'s ``call``: a recipe's run, or sampling at
    32² and the enlargement (an upscaler's network counted, an interpolation free)."""
    if method.recipe is not None:
        return relative_flops(pipe, method.recipe, res, res, steps, **call)
    upscaler = method.resize if callable(method.resize) else None
    return enlargement_relative_flops(pipe, upscaler, 32, res, res, steps, **call)


class PipelineSampler:
    """Samples of a text-to-image pipeline through :func:`hiresdiff.generate`, the prompt of sample i being the name
    of the held-out emoji it is compared with; batch i is seeded with ``seed + i``, so a cascade's first stage is
    the trained-size sample of the same batch."""

    def __init__(self, settings: Settings, pick: torch.Tensor, test_names: list[str]):
        self.pipe, self.model_settings = load_pipeline(settings.model, device="cpu", progress=False)
        self.flow = family_of(find_denoiser(self.pipe)[0]).flow
        if self.flow:  # flow-matching transformers sample with their own flow-matching scheduler
            settings.scheduler = type(self.pipe.scheduler).__name__
        else:
            self.pipe.scheduler = make_scheduler(settings.scheduler, self.pipe.scheduler.config)
        self.settings, self.prompts = settings, [test_names[i] for i in pick.tolist()]

    def sample(self, method: Optional[Method], res: int, count: int) -> torch.Tensor:
        s, parts, call = self.settings, [], self.call(method)
        if method is not None and method.tiled_vae:
            self.pipe.vae.enable_tiling()
        try:
            for i in range(0, count, s.batch_size):
                images = generate(
                    self.pipe,
                    self.prompts[i : min(i + s.batch_size, count)],
                    height=res,
                    width=res,
                    recipe=None if method is None else method.recipe,
                    seed=s.seed + i,
                    steps=s.steps,
                    output_type="pt",
                    **call,
                )
                parts.append(images * 2 - 1)
        finally:
            self.pipe.vae.disable_tiling()
        return torch.cat(parts)

    def relative_flops(self, method: Method, res: int) -> float:
        """The method's FLOPs over direct sampling's at ``res``² with the same call (counted on ``meta``)."""
        call = {"prompt": self.prompts[0], "output_type": "pt", **self.call(method)}
        return method_flops(self.pipe, method, res, self.settings.steps, call)

    def call(self, method: Optional[Method]) -> dict:
        """The pipeline call's arguments for ``method``: CFG as the pipeline takes it, then the method's own."""
        call = dict(() if method is None else method.call)
        guidance = call.pop("guidance_scale", self.settings.guidance_scale)
        return {**self.model_settings.arguments(self.pipe, guidance), **call}


def run(settings: Settings, progress: bool = True) -> dict:
    """Sample every method, score it, and write the table, plot, grids and JSON to ``settings.out_dir``.

    A pixel model (``settings.model`` a ``UNet2DModel`` folder, default the embedded one) runs the ``ug`` or
    ``methods`` suite; a text-to-image pipeline (a folder or short name such as ``emoji-latent``) the ``latent`` one."""
    pipeline = is_pipeline(settings.model)
    upscaler = load_upscaler(settings.upscaler) if settings.upscaler else None
    if settings.suite not in EVERY_MODEL_SUITES and pipeline != (settings.suite == "latent"):
        raise ValueError(
            f"suite {settings.suite!r} is for {'pixel models' if settings.suite != 'latent' else 'pipelines'}; "
            f"model {settings.model or 'embedded'!r} is {'a pipeline' if pipeline else 'a pixel model'}"
        )
    data_path = settings.data
    sizes = (32, *[32 * s for s in settings.scales])
    test = {r: emoji.load(r, "test", data_path) for r in sizes if r in emoji.RESOLUTIONS}  # none above 128²
    train = {r: emoji.load(r, "train", data_path) for r in test}
    n = min(settings.num_images, len(test[32].images))
    gen = torch.Generator().manual_seed(settings.seed)
    pick = torch.randperm(len(test[32].images), generator=gen)[:n]
    big = 32 * max(settings.scales)
    sampler = (
        PipelineSampler(settings, pick, test[32].names)
        if pipeline
        else PixelSampler(settings, pick, test[32].labels, big)
    )
    if settings.suite == "shift" and not getattr(sampler, "flow", False):
        raise ValueError(f"suite 'shift' is for flow-matching pipelines (emoji-flux); got {settings.model!r}")
    features = {r: metrics.RandomConvFeatures(resolution=r, seed=0) for r in test}
    inception = metrics.InceptionFeatures(settings.inception) if settings.inception else None

    results = {"settings": asdict(settings), "rows": {}, "timing": {}, "images": {}, "intervals": {}}
    floor_pick = torch.randperm(len(train[32].images), generator=gen)[:n]
    for r in sizes:
        results["images"][str(r)] = min(n, settings.images_at(r // 32))
    for r in test:  # real-vs-real floor: as many train images as each method has, against the held-out test images
        count = results["images"][str(r)]
        results["rows"][f"{r}|real train vs test"] = score(
            train[r].images[floor_pick[:count]], test[r].images, None, features[r], inception
        )

    start = time.time()
    trained = sampler.sample(None, 32, n)
    if trained.shape[-2:] != (32, 32):
        raise ValueError(
            f"the benchmark compares with 32² emoji ground truth; the model's trained size is "
            f"{tuple(trained.shape[-2:])}"
        )
    results["timing"]["32|trained 1x"] = (time.time() - start) / n
    condition = asked_for(sampler, test[32], pick)
    results["rows"]["32|trained 1x"] = score(
        trained, test[32].images, None, features[32], inception, condition=condition
    )
    grids = {32: {"trained 1x": trained[: settings.grid_rows]}}
    if settings.suite == "ug":
        jobs = [
            m
            for s in settings.scales
            for m in methods_for(
                s,
                settings.thetas if s == 2 else settings.thetas_4x,
                settings.etas,
                ablations=s == 2,
                linear_thetas=settings.linear_thetas,
            )
        ]
    elif settings.suite == "methods":
        jobs = [m for s in settings.scales for m in cascade_methods_for(s, settings.strengths, settings.upsamplers)]
    elif settings.suite == "fast":
        jobs = [m for s in settings.scales for m in fast_methods_for(s)]
        results["flops"] = {}
    elif settings.suite == "headline":
        jobs = [m for s in settings.scales for m in headline_methods_for(s, settings.upsamplers)]
        results["flops"] = {}
    elif settings.suite == "shift":
        jobs = [m for s in settings.scales for m in shift_methods_for(s)]
    elif settings.suite == "strength":
        jobs = [m for s in settings.scales for m in strength_methods_for(s)]
    elif settings.suite == "inversion":
        jobs = [m for s in settings.scales for m in inversion_methods_for(s)]
        results["flops"] = {}
    elif settings.suite == "sr":
        jobs = [m for s in settings.scales for m in sr_methods_for(s, upscaler)]
        results["flops"] = {}
    elif settings.suite == "refine":
        lora = shipped_stage_lora(settings.model)
        jobs = [m for s in settings.scales for m in refine_methods_for(s, upscaler, lora)]
        results["flops"] = {}
    elif sampler.flow:
        jobs = [m for s in settings.scales for m in flow_methods_for(s)]
    else:
        jobs = [m for s in settings.scales for m in latent_methods_for(s, settings.upsamplers)]
    jobs = with_sr_alone(jobs, upscaler)
    made, real_caches = {}, {r: {} for r in test}  # the real side of the metrics, once per size
    for method in tqdm(jobs, desc="benchmark", disable=not progress):
        res = 32 * method.scale
        count = results["images"][str(res)]  # the first `count` seeds of the 32² set
        start = time.time()
        images = (
            enlarge(trained[:count], method.scale, method.resize)
            if method.recipe is None
            else sampler.sample(method, res, count)
        )
        key = f"{res}|{method.name}"
        made[key] = images
        results["timing"][key] = (time.time() - start) / count
        intervals = results["intervals"].setdefault(key, {})
        results["rows"][key] = {
            **score(
                images,
                test[res].images if res in test else None,
                trained[:count],
                features.get(res),
                inception,
                intervals,
                None if condition is None else _subset(condition, torch.arange(count)),
                real_caches.get(res),
            ),
            "θ": method.theta,
        }
        if method.same_as is not None:  # e.g. the tiled VAE's seams: RMSE to the whole-image decode, in [-1, 1] units
            results["rows"][key]["RMSE vs untiled VAE"] = float(
                ((images - made[f"{res}|{method.same_as}"]) ** 2).mean().sqrt()
            )
        if "flops" in results:
            results["flops"][key] = sampler.relative_flops(method, res)
        grids.setdefault(res, {})[method.name] = images[: settings.grid_rows]
    write_outputs(results, grids, trained[: settings.grid_rows], Path(settings.out_dir))
    return results


def asked_for(sampler, test: emoji.EmojiData, pick: torch.Tensor) -> Optional[dict]:
    """What each sample was asked for, as :func:`score` takes it: a pipeline's prompt is the name of a held-out emoji
    (its subgroup), a class-conditioned pixel model's label its group; ``None`` for an unconditioned model."""
    if isinstance(sampler, PipelineSampler):
        return {"subgroups": test.subgroups[pick].tolist()}
    if sampler.labels is not None:
        return {"groups": [test.group_names[i] for i in sampler.labels.tolist()]}
    return None


def _embedded():
    return EMBEDDED_MODEL_DIR


def write_outputs(results: dict, grids: dict, trained, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = results["settings"]["suite"]
    (out_dir / f"{prefix}_benchmark.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    (out_dir / f"{prefix}_benchmark.md").write_text(markdown_table(results))
    if prefix == "ug":
        theta_plot(results, out_dir / "ug_theta_sweep.png")
    else:
        quality_time_plot(results, out_dir / f"{prefix}_quality_time.png")
    if "flops" in results:
        quality_time_plot(results, out_dir / f"{prefix}_pareto.png", cost="flops")
    for res, columns in grids.items():
        if res == 32:
            continue
        names = ["trained 32²", *columns]
        images = [to_pil(trained), *[to_pil(c) for c in columns.values()]]
        save_image(
            labelled_grid(images, names, res if res > 64 else 96), out_dir / f"{prefix}_grid_{res}.png", force=True
        )
