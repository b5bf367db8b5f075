"""generate_from_folder: the CLI's one call, on tiny pipelines saved to local folders."""

import functools

import diffusers
import numpy as np
import pytest
import torch
from tiny_pipelines import load, saved

import hiresdiff
from hiresdiff.loading.pipelines import configure_vae_tiling, generate_from_folder, pick_device, pick_dtype
from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig
from hiresdiff.models import ModelSettings, model_settings
from hiresdiff.recipe import Recipe
from hiresdiff.sampling import stage_parts as stage
from hiresdiff.sampling.family_parts import apply_upsample_guidance

UG = UpsampleGuidanceConfig(factor=2, theta=1.0, eta=0.6)
UG_RECIPE = Recipe(ug=UG)
ARGS = dict(steps=2, seed=0, guidance_scale=5.0, progress=False)


def test_images_with_ug_equal_applying_by_hand_and_differ_from_plain():
    plain = generate_from_folder(str(saved("sd15")), "a red cat", 32, 32, recipe=None, **ARGS)
    guided = generate_from_folder(str(saved("sd15")), "a red cat", 32, 32, recipe=UG_RECIPE, **ARGS)
    pipe = load("sd15")
    apply_upsample_guidance(pipe, UG)
    by_hand = pipe(
        "a red cat",
        height=32,
        width=32,
        num_inference_steps=2,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(0),
    ).images
    assert len(guided) == len(plain) == 1 and guided[0].size == (32, 32)
    assert np.array_equal(np.asarray(guided[0]), np.asarray(by_hand[0]))
    assert not np.array_equal(np.asarray(guided[0]), np.asarray(plain[0]))


@pytest.mark.parametrize("factor", [(2, 1, 1), (2, 2, 2)], ids=["temporal", "spatio-temporal"])
def test_video_returns_all_frames(factor):
    frames = generate_from_folder(
        str(saved("animatediff")),
        "a red cat",
        32,
        32,
        num_frames=4,
        recipe=Recipe(ug=UpsampleGuidanceConfig(factor=factor, theta=1.0, eta=0.6)),
        **ARGS,
    )
    assert len(frames) == 4 and all(frame.size == (32, 32) for frame in frames)


def test_unet_less_model_is_rejected_before_any_weights_load(monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", no_loading)
    with pytest.raises(ValueError, match="DiTPipeline has transformer"):
        generate_from_folder(str(saved("dit")), "a red cat", 32, 32, recipe=UG_RECIPE, **ARGS)


def test_a_missing_pipeline_folder_is_refused_in_one_line_naming_it(tmp_path):
    missing = str(tmp_path / "no-such-pipeline")
    with pytest.raises(
        FileNotFoundError,
        match="no-such-pipeline. is neither a short name .emoji-latent, emoji-flux, emoji-video., a diffusers pipeline",
    ) as caught:
        generate_from_folder(missing, "a red cat", 32, 32, recipe=None, **ARGS)
    assert "\n" not in str(caught.value)


def test_indivisible_size_is_rejected_before_sampling(monkeypatch):
    @functools.wraps(diffusers.StableDiffusionPipeline.__call__)  # the same signature: hiresdiff checks it
    def no_sampling(*args, **kwargs):
        raise AssertionError("the pipeline ran")

    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "__call__", no_sampling)
    with pytest.raises(ValueError, match="ug needs integer scales"):
        generate_from_folder(str(saved("sd15")), "a red cat", 24, 24, recipe=UG_RECIPE, **ARGS)
    with pytest.raises(ValueError, match="num_frames must be a multiple of 2"):
        generate_from_folder(
            str(saved("animatediff")),
            "a red cat",
            32,
            32,
            num_frames=3,
            recipe=Recipe(ug=UpsampleGuidanceConfig(factor=(2, 1, 1))),
            **ARGS,
        )


def test_ug_is_removed_when_the_pipeline_fails(monkeypatch):
    removed = []
    monkeypatch.setattr(stage, "remove_upsample_guidance", lambda unet: removed.append(unet))
    with pytest.raises(ValueError):
        generate_from_folder(
            str(saved("sd15")), None, 32, 32, recipe=UG_RECIPE, **ARGS
        )  # no prompt: the pipeline raises
    assert len(removed) == 1


def test_device_and_dtype():
    assert pick_device() == "cpu"  # no accelerator on the test machines
    assert pick_dtype("cpu") == pick_dtype("mps") == torch.float32
    assert pick_dtype("cuda") == pick_dtype("cuda:1") == torch.float16


def test_vae_tiling_on_request_and_for_the_output_decode_above_2048_squared(monkeypatch):
    """``vae_tiling=True`` tiles for good; ``None`` lets ``generate`` tile the output's decode itself
    above the φ codec's
    threshold (here lowered to 16² pixels so that a tiny run crosses it), for that call only."""
    from hiresdiff.sampling import codecs

    pipe = load("sd15")
    configure_vae_tiling(pipe, None)
    configure_vae_tiling(pipe, False)
    assert not pipe.vae.use_tiling
    seen = []
    decode = pipe.vae.decode
    pipe.vae.decode = lambda *a, **k: (seen.append(pipe.vae.use_tiling), decode(*a, **k))[1]
    monkeypatch.setattr(codecs, "TILE_ABOVE_PIXELS", 16 * 16)
    hiresdiff.generate(pipe, "a red cat", height=32, width=32, steps=2, output_type="latent")
    hiresdiff.generate(pipe, "a red cat", height=32, width=32, steps=2)
    hiresdiff.generate(pipe, "a red cat", height=32, width=32, steps=2, vae_tiling=False)
    hiresdiff.generate(pipe, "a red cat", height=16, width=16, steps=2)
    assert seen == [True, False, False] and not pipe.vae.use_tiling
    del pipe.vae.decode
    configure_vae_tiling(pipe, True)
    assert pipe.vae.use_tiling
    with pytest.raises(ValueError, match="has no VAE"):
        configure_vae_tiling(load("pixel"), True)
    assert (
        len(generate_from_folder(str(saved("sd15")), "a red cat", 32, 32, recipe=UG_RECIPE, vae_tiling=True, **ARGS))
        == 1
    )


def test_settings_arguments_pass_a_negative_prompt_only_when_given_and_true_cfg_to_an_undistilled_flux():
    sd15, none = load("sd15"), ModelSettings()
    assert none.arguments(sd15, 5.0) == {"guidance_scale": 5.0}
    assert none.arguments(sd15, 7.5, "blurry") == {"guidance_scale": 7.5, "negative_prompt": "blurry"}
    assert none.arguments(sd15) == {"guidance_scale": 7.5}
    flux = load("flux")  # no guidance embedding: guidance_scale would do nothing, true CFG needs a negative prompt
    assert none.arguments(flux, 4.0) == {"true_cfg_scale": 4.0, "negative_prompt": ""}
    assert ModelSettings(trained_size=16).arguments(sd15, 5.0) == {"guidance_scale": 5.0, "trained_size": 16}


def test_a_folders_hiresdiff_json_sets_the_trained_size_and_call_defaults(tmp_path):
    import json
    import shutil

    from hiresdiff.loading.pipelines import load_pipeline

    folder = tmp_path / "flux"
    shutil.copytree(saved("flux"), folder)
    (folder / "hiresdiff.json").write_text(json.dumps({"trained_size": 16, "call": {"max_sequence_length": 16}}))
    pipe, settings = load_pipeline(str(folder), device="cpu", progress=False)
    assert settings == ModelSettings(trained_size=16, call={"max_sequence_length": 16})
    assert pipe.default_sample_size * pipe.vae_scale_factor == 16  # the pipeline's own setting, made true
    assert not [name for name in vars(pipe) if "hiresdiff" in name]  # nothing of hiresdiff's is kept on the pipeline
    assert settings.arguments(pipe, 3.0) == {
        "max_sequence_length": 16,
        "true_cfg_scale": 3.0,
        "negative_prompt": "",
        "trained_size": 16,
    }
    images = generate_from_folder(
        str(folder),
        "a red cat",
        32,
        32,
        recipe=Recipe.preset("freescale"),
        steps=4,  # a flow model's later stages run int(4·0.3) = 1 of them
        guidance_scale=3.0,
        device="cpu",
        progress=False,
    )
    assert images[0].size == (32, 32)


def test_recommended_guidance_is_the_given_scale_else_the_folders_else_7_5(tmp_path):
    import json

    def recommended_guidance(model, scale=None):
        return model_settings(model).guidance_scale(scale)

    with_settings, without = tmp_path / "with", tmp_path / "without"
    for folder in (with_settings, without):
        folder.mkdir()
        (folder / "model_index.json").write_text("{}")
    (with_settings / "hiresdiff.json").write_text(json.dumps({"call": {"guidance_scale": 4.0}}))
    assert recommended_guidance(str(with_settings)) == 4.0
    assert recommended_guidance(str(with_settings), 2.5) == 2.5 and recommended_guidance(str(with_settings), 0.0) == 0.0
    assert recommended_guidance(str(without)) == 7.5 and recommended_guidance(None) == 7.5
    assert recommended_guidance("emoji-flux") == 4.0  # the shipped flow model's card value


def test_a_hub_id_without_network_fails_at_once_from_the_cache(monkeypatch):
    """A hub id on a machine where the hub cannot be reached is looked up in the Hugging Face cache alone (no request,
    so no minutes of retries) and refused in one line that says why; with network the hub is asked as usual."""
    from diffusers import DiffusionPipeline

    from hiresdiff.loading import pipelines

    asked = []

    def load_config(name, **kwargs):
        asked.append(kwargs.get("local_files_only", False))
        raise OSError("not found")

    monkeypatch.setattr(DiffusionPipeline, "load_config", load_config)
    monkeypatch.setattr(pipelines, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache and the hub cannot be reached"):
        pipelines.load_pipeline("someone/some-model")
    monkeypatch.setattr(pipelines, "hub_reachable", lambda timeout=3.0: True)
    with pytest.raises(FileNotFoundError, match="hub id that can be downloaded"):
        pipelines.load_pipeline("someone/some-model")
    assert asked == [True, False]


def test_offline_mode_means_the_hub_is_not_reachable(monkeypatch):
    import huggingface_hub

    from hiresdiff.loading.pipelines import hub_reachable

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert hub_reachable() is False
