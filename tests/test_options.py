"""Method names and CLI options → recipes (hiresdiff.options)."""

import dataclasses

import pytest

from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig
from hiresdiff.options import MethodOptions, parse_methods, recipes_for
from hiresdiff.recipe import Recipe


def test_comma_lists_and_compositions_parse_to_the_python_presets():
    assert parse_methods(["naive,ug", "freescale+ug", " self-cascade "]) == [
        "naive",
        "ug",
        "freescale+ug",
        "self-cascade",
    ]
    recipes = recipes_for(["freescale+ug", "self-cascade+ug"])
    assert recipes["freescale+ug"] == dataclasses.replace(
        Recipe.freescale(ug=UpsampleGuidanceConfig()), name="freescale+ug"
    )
    assert recipes["self-cascade+ug"].cascade == Recipe.self_cascade().cascade
    assert recipes["self-cascade+ug"].ug == Recipe.upsample_guidance().ug


@pytest.mark.parametrize("items,message", [([""], "--method needs"), (["naive,foo"], "'foo'"), (["ug+"], "ug+")])
def test_bad_method_lists_name_the_problem(items, message):
    with pytest.raises(ValueError, match=message):
        parse_methods(items)


def test_options_set_the_parts_each_method_has():
    opts = MethodOptions(theta=1.5, eta=0.6, strength=0.5, alpha=3.0, inversion=0.2, tiles=0.25)
    recipes = recipes_for(["naive", "ug", "self-cascade", "freescale+ug"], opts)
    assert recipes["naive"] == Recipe.preset("naive")
    assert (recipes["ug"].ug.theta, recipes["ug"].ug.eta) == (1.5, 0.6)
    assert recipes["self-cascade"].cascade.strength == 0.5 and recipes["self-cascade"].cascade.detail_alpha == 3.0
    fs = recipes["freescale+ug"]
    assert (fs.cascade.strength, fs.cascade.detail_alpha, fs.ug.theta, fs.cascade.inversion) == (0.5, 3.0, 1.5, 0.2)
    assert fs.cascade.tiles == 0.25 and recipes["self-cascade"].cascade.tiles == 0.25
    assert fs.dilation == Recipe.freescale().dilation and fs.fusion == Recipe.freescale().fusion


@pytest.mark.parametrize(
    "option,methods",
    [
        ("theta", ["naive", "self-cascade"]),
        ("eta", ["freescale"]),
        ("strength", ["naive", "ug"]),
        ("alpha", ["ug"]),
        ("inversion", ["naive", "ug"]),
        ("tiles", ["ug"]),
        ("upscaler", ["naive"]),
        ("upsamplers", ["naive"]),
    ],
)
def test_an_option_no_method_uses_is_refused_by_name(option, methods):
    with pytest.raises(ValueError, match=f"--{option} applies to"):
        recipes_for(methods, MethodOptions(**{option: "x" if option in ("upsamplers", "upscaler") else 0.5}))


def test_bad_option_values_are_refused_by_the_configs():
    with pytest.raises(ValueError, match="strength"):
        recipes_for(["self-cascade"], MethodOptions(strength=1.5))
    with pytest.raises(ValueError, match="theta"):
        recipes_for(["ug"], MethodOptions(theta=-1.0))


def test_default_upsamplers_tune_plain_self_cascade_only_and_none_turns_them_off():
    from hiresdiff.models import EMBEDDED_UPSAMPLERS_DIR

    folder = str(EMBEDDED_UPSAMPLERS_DIR)  # a well-formed folder: recipes check the form of the ones they name
    recipes = recipes_for(["self-cascade", "self-cascade+ug", "freescale"], default_upsamplers=folder)
    assert recipes["self-cascade"].upsamplers == folder
    assert recipes["self-cascade+ug"].upsamplers is None and recipes["freescale"].upsamplers is None
    given = recipes_for(["self-cascade+ug"], MethodOptions(upsamplers=folder))
    assert given["self-cascade+ug"].upsamplers == folder
    off = recipes_for(["self-cascade"], MethodOptions(upsamplers="none"), default_upsamplers=folder)
    assert off["self-cascade"].upsamplers is None
