"""Method names and options → recipes: what the CLI's ``--method naive,ug,freescale+ug --strength 0.6 …`` means.

A method is a preset name or an ``a+b`` composition (:meth:`hiresdiff.recipe.Recipe.preset`). The
options tune the part of the recipe they name and are refused (``ValueError`` naming the option) when
none of the chosen methods has that part, so a flag is never silently ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from hiresdiff.defaults import COMPARISON_METHODS, PRESETS  # noqa: F401  (re-exported)
from hiresdiff.methods.family_defaults import FLOW
from hiresdiff.methods.positions import PositionConfig
from hiresdiff.recipe import Recipe


def parse_methods(items: Sequence[str]) -> list[str]:
    """``["naive,ug", "freescale+ug"]`` → ``["naive", "ug", "freescale+ug"]``, each checked against the presets."""
    methods = [m.strip() for item in items for m in item.split(",") if m.strip()]
    if not methods:
        raise ValueError(f"--method needs at least one of {', '.join(PRESETS)} (or an 'a+b' composition)")
    for method in methods:
        Recipe.preset(method)  # raises ValueError naming the method
    return methods


@dataclass(frozen=True)
class MethodOptions:
    """Options of the methods' parts; ``None`` keeps the preset's value.

    theta, eta: Upsample Guidance's θ and η. strength: the cascade's re-noised fraction (K = strength·T).
    alpha: FreeScale's detail control α (also adds detail control to a Self-Cascade). inversion: the cascade's restart
    from the inversion with this share of fresh noise (:class:`~hiresdiff.methods.self_cascade.CascadeConfig`).
    upscaler: a super-resolution model file (any spandrel reads) as the cascade's φ, loaded once by
    :func:`recipes_for`. tiles: the later stages denoised in feathered tiles of the trained size overlapping by this
    share. stage_scheduler, stage_lora: the later stages' scheduler (a short name) and LoRA (a folder, file or hub id).
    upsamplers: a folder of
    trained feature upsamplers for cascades (``"none"``: the tuning-free cascade even where some are shipped).
    Shipped upsamplers tune the plain ``self-cascade`` method only: compositions run as benchmarked, tuning-free,
    unless ``upsamplers`` names a folder. positions: a flow transformer's position rescaling (``"pi"``, ``"ntk"``,
    ``"yarn"``) for every method, over the dilation's early window where the method has one, else every step.
    """

    theta: Optional[float] = None
    eta: Optional[float] = None
    strength: Optional[float] = None
    alpha: Optional[float] = None
    inversion: Optional[float] = None
    upscaler: Optional[str] = None
    tiles: Optional[float] = None
    stage_scheduler: Optional[str] = None
    stage_lora: Optional[str] = None
    upsamplers: Optional[str] = None
    positions: Optional[str] = None

    def check_applies(self, recipes: Sequence[Recipe]) -> None:
        """``ValueError`` naming an option that none of ``recipes`` has a part for."""
        has = {"ug": any(r.ug is not None for r in recipes), "cascade": any(r.cascade is not None for r in recipes)}
        for option, part in (
            ("theta", "ug"),
            ("eta", "ug"),
            ("strength", "cascade"),
            ("alpha", "cascade"),
            ("inversion", "cascade"),
            ("upscaler", "cascade"),
            ("tiles", "cascade"),
            ("stage_scheduler", "cascade"),
            ("stage_lora", "cascade"),
            ("upsamplers", "cascade"),
        ):
            if getattr(self, option) is not None and not has[part]:
                names = ", ".join(r.name for r in recipes)
                kind = "Upsample Guidance (ug, …+ug)" if part == "ug" else "a cascade (self-cascade, freescale)"
                raise ValueError(
                    f"--{option.replace('_', '-')} applies to methods with {kind}; the methods are {names}"
                )

    def apply(self, recipe: Recipe, default_upsamplers: Optional[str] = None, upscaler=None) -> Recipe:
        """``recipe`` with these options set on the parts it has (``default_upsamplers`` for plain Self-Cascade;
        ``upscaler``: the model :attr:`upscaler` names, loaded; the fast preset's cascade, alone or composed, then
        takes :meth:`Recipe.fast`'s defaults with an upscaler: one jump refined in one step)."""
        changes = {}
        if recipe.ug is not None:
            ug = {k: v for k, v in (("theta", self.theta), ("eta", self.eta)) if v is not None}
            changes["ug"] = dataclasses.replace(recipe.ug, **ug)
        if recipe.cascade is not None and upscaler is not None and recipe.cascade == Recipe.fast().cascade:
            recipe = dataclasses.replace(recipe, cascade=Recipe.fast(upscaler=upscaler).cascade)  # fast's SR point
        if recipe.cascade is not None:
            cascade = {
                k: v
                for k, v in (
                    ("strength", self.strength),
                    ("detail_alpha", self.alpha),
                    ("inversion", self.inversion),
                    ("upscaler", upscaler),
                    ("tiles", self.tiles),
                    ("stage_scheduler", self.stage_scheduler),
                    ("stage_lora", self.stage_lora),
                )
                if v is not None
            }
            changes["cascade"] = dataclasses.replace(recipe.cascade, **cascade)
            upsamplers = self.upsamplers
            if upsamplers is None and recipe.name == "self-cascade":
                upsamplers = default_upsamplers  # plain Self-Cascade is tuned where upsamplers are shipped
            if upsamplers is not None:
                changes["upsamplers"] = None if upsamplers == "none" else upsamplers
        if self.positions is not None:
            # positions act on flow transformers only: dilation's window there is the flow family's
            until = recipe.dilation.for_family(FLOW).until if recipe.dilation is not None else 1.0
            changes["positions"] = PositionConfig(self.positions, until=until)
        return dataclasses.replace(recipe, **changes) if changes else recipe


def recipes_for(
    methods: Sequence[str], options: MethodOptions = MethodOptions(), default_upsamplers: Optional[str] = None
) -> dict[str, Recipe]:
    """{method: recipe} with ``options`` applied; every name and option is checked, and the upscaler file read,
    before any model loads."""
    presets = {m: Recipe.preset(m) for m in methods}
    options.check_applies(list(presets.values()))
    upscaler = None
    if options.upscaler is not None:
        from hiresdiff.loading.upscaler import load_upscaler

        upscaler = load_upscaler(options.upscaler)
    return {m: options.apply(r, default_upsamplers, upscaler) for m, r in presets.items()}
