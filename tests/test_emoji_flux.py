"""emoji-flux: the shipped FLUX-architecture pipeline, its loading by short name, its tokenizers and its training
recipe (a flow-matching step lowers the loss; a run resumes exactly)."""

import argparse
import json
import shutil

import pytest
import torch
from test_emoji_latent import as_config, fake_cache

from hiresdiff.models import EMOJI_FLUX_DIR, model_settings, resolve_model
from hiresdiff.training import flux_model as train_flux
from hiresdiff.training.loop import flow_loss


@pytest.fixture(scope="module")
def pipe():
    from hiresdiff.loading.pipelines import load_pipeline

    return load_pipeline("emoji-flux", device="cpu", progress=False)[0]


def test_shipped_pipeline_loads_by_short_name_with_its_trained_size_and_call_defaults(pipe):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    assert isinstance(pipe, FluxPipeline) and resolve_model("emoji-flux") == str(EMOJI_FLUX_DIR)
    config = pipe.transformer.config
    assert {k: config[k] for k in train_flux.TRANSFORMER_CONFIG} == {
        k: as_config(v) for k, v in train_flux.TRANSFORMER_CONFIG.items()
    }
    settings = model_settings("emoji-flux")
    assert pipe.default_sample_size * pipe.vae_scale_factor == 32 == settings.trained_size
    assert settings.call == {"max_sequence_length": 24, "guidance_scale": 4.0}
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler) and pipe.scheduler.config.use_dynamic_shifting
    assert pipe.transformer.dtype == torch.float32 and pipe.vae.config.shift_factor == 0.0
    size = sum(f.stat().st_size for f in EMOJI_FLUX_DIR.rglob("*") if f.is_file())
    assert size < 25 * 2**20 and (EMOJI_FLUX_DIR / "README.md").exists()
    assert json.loads((EMOJI_FLUX_DIR / "training.json").read_text())["step"] > 0


def test_generation_is_deterministic_by_seed_and_hiresdiff_gives_the_plain_call(pipe):
    from hiresdiff import generate

    def run(seed):
        return pipe(
            "cat face",
            height=32,
            width=32,
            num_inference_steps=3,
            output_type="pt",
            max_sequence_length=24,
            true_cfg_scale=4.0,
            negative_prompt="",
            generator=torch.Generator().manual_seed(seed),
        ).images

    a, b, c = run(0), run(0), run(1)
    assert a.shape == (1, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(
        generate(
            pipe,
            "cat face",
            height=32,
            width=32,
            steps=3,
            seed=0,
            output_type="pt",
            **model_settings("emoji-flux").arguments(pipe),
        ),
        a,
    )


def test_the_t5_tokenizer_encodes_every_emoji_name_without_unknown_pieces(pipe):
    prompts = json.loads((EMOJI_FLUX_DIR / "prompts.json").read_text())
    tokenizer = pipe.tokenizer_2
    for name in prompts["train"] + prompts["test"]:
        ids = tokenizer(name).input_ids
        assert tokenizer.unk_token_id not in ids and len(ids) <= train_flux.T5_LENGTH, name
        assert tokenizer.decode(ids, skip_special_tokens=True) == name


def test_a_flow_step_lowers_the_loss_on_a_fixed_batch():
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=8,
        pooled_projection_dim=8,
        axes_dims_rope=(2, 2, 4),
    )
    text = torch.randn(4, 3, 8)

    def model(x_t, t):
        ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1)
        return transformer(
            x_t,
            encoder_hidden_states=text,
            pooled_projections=text[:, 0],
            timestep=t,
            img_ids=ids.reshape(-1, 3),
            txt_ids=torch.zeros(3, 3),
            return_dict=False,
        )[0]

    x0 = train_flux.pack(torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1)))
    opt = torch.optim.Adam(transformer.parameters(), lr=3e-3)

    def loss():
        return flow_loss(model, x0, generator=torch.Generator().manual_seed(2), autocast=False)

    before = loss().item()
    for _ in range(5):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < before


def test_training_resumes_exactly_and_ships_with_its_settings(tmp_path):
    data = fake_cache(tmp_path / "cache.npz")

    def train(run, steps, *extra):
        parser = train_flux.add_arguments(argparse.ArgumentParser())
        train_flux.train(
            parser.parse_args(
                [
                    "--data",
                    str(data),
                    "--batch-size",
                    "2",
                    "--save-every",
                    "1",
                    "--log-every",
                    "1",
                    "--threads",
                    "1",
                    "--warmup",
                    "1",
                    "--run-dir",
                    str(tmp_path / run),
                    "--steps",
                    str(steps),
                    *extra,
                ]
            )
        )

    train("a", 1)
    train("a", 2, "--ship", str(tmp_path / "shipped"))
    (
        tmp_path / "b"
    ).mkdir()  # the same T5 tokenizer (a run builds its own once; equal-score pieces may order differently)
    shutil.copytree(tmp_path / "a" / "tokenizer_2", tmp_path / "b" / "tokenizer_2")
    train("b", 2)
    resumed, straight = (torch.load(tmp_path / r / "transformer_state.pt", weights_only=False) for r in "ab")
    assert resumed["step"] == straight["step"] == 2
    for key in ("transformer", "text_encoder", "text_encoder_2"):
        assert all(torch.equal(resumed[key][k], straight[key][k]) for k in straight[key])
    shipped = tmp_path / "shipped"
    assert json.loads((shipped / "hiresdiff.json").read_text()) == train_flux.HIRESDIFF_SETTINGS
    assert json.loads((shipped / "training.json").read_text())["step"] == 2
