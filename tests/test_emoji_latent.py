"""The emoji-latent pipeline: the shipped folder, its tokenizer, its training recipe and its command line."""

import argparse
import fnmatch
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from hiresdiff.models import (
    EMOJI_FLUX_DIR,
    EMOJI_LATENT_DIR,
    EMOJI_LATENT_UPSAMPLERS_DIR,
    is_pipeline,
    resolve_model,
    shipped_upsamplers,
)
from hiresdiff.models.emoji_tokenizer import build_tokenizer
from hiresdiff.training import latent_model as train_pipeline
from hiresdiff.training import loop as training

ROOT = Path(__file__).resolve().parents[1]


def as_config(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.fixture(scope="module")
def pipe():
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(EMOJI_LATENT_DIR)


@pytest.fixture(scope="module")
def prompts():
    return json.loads((EMOJI_LATENT_DIR / "prompts.json").read_text())


def test_shipped_pipeline_loads_with_the_documented_components(pipe):
    from diffusers import DPMSolverMultistepScheduler

    for config, module in ((train_pipeline.UNET_CONFIG, pipe.unet), (train_pipeline.VAE_CONFIG, pipe.vae)):
        assert {k: module.config[k] for k in config} == {k: as_config(v) for k, v in config.items()}
    assert {k: getattr(pipe.text_encoder.config, k) for k in train_pipeline.TEXT_CONFIG} == train_pipeline.TEXT_CONFIG
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.float32  # one dtype as loaded
    assert pipe.vae_scale_factor == 2 and pipe.unet.config.sample_size * pipe.vae_scale_factor == 32
    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.scheduler.config.beta_schedule == "squaredcos_cap_v2"
    assert 0.1 < pipe.vae.config.scaling_factor < 10
    size = sum(f.stat().st_size for f in EMOJI_LATENT_DIR.rglob("*") if f.is_file())
    assert size < 25 * 2**20 and (EMOJI_LATENT_DIR / "README.md").exists()
    assert json.loads((EMOJI_LATENT_DIR / "training.json").read_text())["step"] > 0


def test_the_folders_are_package_data():
    """Every file of the shipped folders matches a package-data pattern, so a non-editable install carries them."""
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with tomllib")
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "hiresdiff.models"
    ]
    models = EMOJI_LATENT_DIR.parent
    files = [
        f
        for folder in (EMOJI_LATENT_DIR, EMOJI_LATENT_UPSAMPLERS_DIR, EMOJI_FLUX_DIR)
        for f in folder.rglob("*")
        if f.is_file()
    ]
    assert len(files) > 10
    for f in files:
        assert any(fnmatch.fnmatch(str(f.relative_to(models)), p) for p in patterns), f


def test_short_name_resolves_to_the_shipped_folder_and_its_upsamplers():
    assert resolve_model("emoji-latent") == str(EMOJI_LATENT_DIR) and is_pipeline("emoji-latent")
    assert (
        shipped_upsamplers("emoji-latent")
        == shipped_upsamplers(str(EMOJI_LATENT_DIR))
        == {2: str(EMOJI_LATENT_UPSAMPLERS_DIR)}
    )
    assert resolve_model("some/hub-id") == "some/hub-id" and not is_pipeline(None)


def test_tokenizer_round_trips_every_emoji_name(pipe, prompts):
    tokenizer = pipe.tokenizer
    names = prompts["train"] + prompts["test"]
    assert len(names) > 3000
    for name in names:
        ids = tokenizer(name).input_ids
        assert len(ids) <= tokenizer.model_max_length and tokenizer.unk_token_id not in ids[1:-1]
        assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == name.lower().replace(" ", "")
    assert tokenizer("cat face").input_ids != tokenizer("dog face").input_ids


def test_tokenizer_is_rebuilt_from_the_training_names(pipe, prompts):
    """The same tokens and splits (the ids of merges learnt with equal counts may come out in another order, so
    the shipped tokenizer, not a rebuild, goes with the weights)."""
    rebuilt = build_tokenizer(prompts["train"])
    assert set(rebuilt.get_vocab()) == set(pipe.tokenizer.get_vocab())
    assert all(rebuilt.tokenize(name) == pipe.tokenizer.tokenize(name) for name in prompts["train"][::7])
    assert rebuilt.model_max_length == pipe.tokenizer.model_max_length


def test_generation_at_the_trained_size_is_deterministic_by_seed(pipe):
    from hiresdiff import generate

    def run(seed):
        return pipe(
            "cat face",
            height=32,
            width=32,
            num_inference_steps=4,
            output_type="pt",
            generator=torch.Generator().manual_seed(seed),
        ).images

    a, b, c = run(0), run(0), run(1)
    assert a.shape == (1, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(generate(pipe, "cat face", height=32, width=32, steps=4, seed=0, output_type="pt"), a)


def test_cfg_and_negative_prompts_change_the_image(pipe):
    def run(**kwargs):
        return pipe(
            "red apple",
            height=32,
            width=32,
            num_inference_steps=4,
            output_type="pt",
            generator=torch.Generator().manual_seed(0),
            **kwargs,
        ).images

    plain, no_cfg, negative = run(), run(guidance_scale=1.0), run(negative_prompt="green apple")
    assert (plain - no_cfg).abs().mean() > 1e-3 and (plain - negative).abs().mean() > 1e-3


# ---- the training recipe, on a small fake data cache (no Debian packages needed) ----


def fake_cache(path: Path, n: int = 12) -> Path:
    """A data cache in ``hiresdiff data``'s format: smooth random colour images, names of a few words."""
    g = torch.Generator().manual_seed(0)
    img32 = torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=32, mode="bilinear")
    img128 = torch.nn.functional.interpolate(img32, size=128, mode="bilinear")
    img64 = torch.nn.functional.avg_pool2d(img128, 2)
    img32 = torch.nn.functional.avg_pool2d(img64, 2)
    to_np = lambda x: (x * 255).permute(0, 2, 3, 1).numpy()  # noqa: E731
    words = ["cat", "dog", "red", "face", "heart", "flag"]
    names = [f"{words[i % 6]} {words[(i * 5 + 1) % 6]}" for i in range(n)]
    np.savez(
        path,
        img128=to_np(img128),
        img64=to_np(img64),
        img32=to_np(img32),
        is_test=np.arange(n) % 4 == 0,
        group=np.arange(n) % 3,
        group_names=np.array(["a", "b", "c"]),
        subgroup=np.arange(n) % 2,
        subgroup_names=np.array(["a-one", "b-two"]),
        text=np.array(["x"] * n),
        name=np.array(names),
    )
    return path


def small_phase_args(**kw):
    return argparse.Namespace(ema_decay=0.999, warmup=1, **kw)


def test_a_unet_step_lowers_the_loss_on_a_fixed_batch(tmp_path):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tokenizer = build_tokenizer(["cat face", "red heart"])
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length, **train_pipeline.TEXT_CONFIG
        )
    )
    unet, scheduler = (
        UNet2DConditionModel(**train_pipeline.UNET_CONFIG),
        DDPMScheduler(**train_pipeline.SCHEDULER_CONFIG),
    )
    model = train_pipeline.text_unet_v(unet, text)
    model.ids = tokenizer(["cat face", "red heart"] * 2, padding="max_length", return_tensors="pt").input_ids
    x0 = torch.randn(4, 4, 16, 16, generator=torch.Generator().manual_seed(1))

    def loss():  # the same t and noise every call: a fixed batch
        return training.v_loss(model, scheduler, x0, generator=torch.Generator().manual_seed(2))

    phase = training.Phase("unet", {"unet": unet, "text_encoder": text}, tmp_path, small_phase_args(), steps=3, lr=1e-3)
    before = loss().item()
    phase.run(loss, save_every=3, log_every=1, on_save=lambda: None)
    assert loss().item() < before and phase.step == 3


def test_a_vae_step_lowers_the_loss_on_a_fixed_batch(tmp_path):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**train_pipeline.VAE_CONFIG)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1

    def loss():
        return train_pipeline.vae_loss(vae, x, generator=torch.Generator().manual_seed(2))

    phase = training.Phase("vae", {"vae": vae}, tmp_path, small_phase_args(), steps=3, lr=1e-3)
    before = loss().item()
    phase.run(loss, save_every=3, log_every=1, on_save=lambda: None)
    assert loss().item() < before


def test_training_resumes_exactly_from_its_checkpoints_and_ships(tmp_path):
    data = fake_cache(tmp_path / "cache.npz")
    common = [
        "--data",
        str(data),
        "--batch-size",
        "2",
        "--vae-batch-size",
        "2",
        "--save-every",
        "1",
        "--log-every",
        "1",
        "--threads",
        "1",
        "--vae-steps",
        "2",
    ]
    train_pipeline.main(common + ["--run-dir", str(tmp_path / "a"), "--unet-steps", "2"])
    with open(tmp_path / "a" / "unet_loss.csv", "a") as log:  # an interrupted run logged a step after its last save
        log.write("3,99.0,1.0\n")
    train_pipeline.main(
        common + ["--run-dir", str(tmp_path / "a"), "--unet-steps", "3", "--ship", str(tmp_path / "shipped")]
    )
    train_pipeline.main(common + ["--run-dir", str(tmp_path / "b"), "--unet-steps", "3"])
    resumed, straight = (torch.load(tmp_path / r / "unet_state.pt", weights_only=False) for r in "ab")
    assert resumed["step"] == straight["step"] == 3
    for key in ("unet", "text_encoder"):
        assert all(torch.equal(resumed[key][k], straight[key][k]) for k in straight[key])
    rows = (tmp_path / "a" / "unet_loss.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3] and "99.0" not in rows[2]
    losses = [[r.split(",")[1] for r in (tmp_path / run / "unet_loss.csv").read_text().splitlines()] for run in "ab"]
    assert losses[0] == losses[1]  # the same losses step by step (the wall times differ)
    shipped = tmp_path / "shipped"
    assert is_pipeline(str(shipped)) and json.loads((shipped / "training.json").read_text())["step"] == 3
    assert json.loads((shipped / "prompts.json").read_text())["test"]


# ---- the command line ----


def run_cli(*args, cwd):
    return subprocess.run([shutil.which("hiresdiff"), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_generate_with_the_short_name_writes_a_grid(tmp_path):
    from PIL import Image

    done = run_cli(
        "generate",
        "--model",
        "emoji-latent",
        "--prompt",
        "cat face",
        "--method",
        "naive,freescale+ug",
        "--steps",
        "3",
        "--out",
        "grid.png",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "freescale+ug" in done.stdout and "naive" in done.stdout
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.width > 2 * 96


@pytest.mark.parametrize(
    "args,words",
    [
        (["--model", "no-such-model", "--prompt", "cat face"], ["no-such-model", "emoji-latent"]),
        (["--model", "{folder}", "--prompt", "cat face"], ["{folder}"]),
        (["--model", "emoji-latent", "--prompt", "  "], ["--prompt"]),
        (["--model", "emoji-latent"], ["--model emoji-latent", "--prompt"]),
    ],
)
def test_bad_model_or_prompt_is_one_line_naming_it(tmp_path, args, words):
    folder = tmp_path / "not-a-pipeline"
    folder.mkdir()
    args = [a.replace("{folder}", str(folder)) for a in args]
    done = run_cli("generate", *args, "--out", "x.png", cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert all(w.replace("{folder}", str(folder)) in done.stderr for w in words), done.stderr
    assert not (tmp_path / "x.png").exists()


def test_the_web_ui_runs_it_by_short_name():
    from hiresdiff.ui import Handlers

    handlers = Handlers("emoji-latent")
    assert handlers.is_pipeline and handlers.trained_size() == (32, 32)
    *_, (items, status, columns) = handlers.compare(["naive", "self-cascade"], 2, 0, 2, 1, prompt="cat face")
    assert columns == 3 and [image.size for image, _ in items] == [(32, 32), (64, 64), (64, 64)]
