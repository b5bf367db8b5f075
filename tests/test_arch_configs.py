"""The real architectures of hiresdiff/cost/configs/ build and have the published sizes
(hiresdiff/cost/architectures.py).

Everything here runs on the meta device (shapes only, no memory) except the tiny text encoders and one
VAE: the full models are 0.08–2.6 B parameters. Published figures (sources in hiresdiff/cost/configs/README.md):
parameter totals, and the byte sizes of the published fp32 ``diffusion_pytorch_model.safetensors``
files, which a model's state dict determines exactly (8-byte length + JSON header + 4 bytes a value).
"""

import json

import pytest
import torch

from hiresdiff.cost import architectures as A

PUBLISHED_PARAMETERS = {
    "sd15_unet": 859_520_964,  # "859.52 M"
    "sdxl_unet": 2_567_463_684,  # "2.567 B" (SDXL paper: 2.6 B)
    "sd15_vae": 83_653_863,
    "sdxl_vae": 83_653_863,  # same architecture as SD 1.5's, retrained
    "animatediff_motion_adapter_v1_5_2": 453_209_280,  # no exact total published: see the file-size test below
    "animatediff_unet": 859_520_964 + 453_209_280,  # the SD 1.5 UNet with the adapter's motion modules inserted
    "flux1_dev_transformer": 11_901_408_320,  # "12 billion parameter rectified flow transformer" (model card)
    "flux1_dev_vae": 83_819_683,  # SD's VAE with 16 latent channels, no quant convs
    "wan2_1_t2v_1_3b_transformer": 1_418_996_800,  # "Wan2.1-T2V-1.3B"
    "wan2_1_t2v_14b_transformer": 14_288_491_584,  # "Wan2.1-T2V-14B"
    "wan2_1_vae": 126_892_531,  # the Wan report's "Wan-VAE … 127M parameters"
}

# Exact byte sizes of published fp32 safetensors files (git-lfs pointers; see configs/README.md).
PUBLISHED_FILE_BYTES = {
    "sd15_unet": 3_438_167_536,  # runwayml/stable-diffusion-v1-5 unet/diffusion_pytorch_model.non_ema.safetensors
    "sdxl_unet": 10_270_077_736,  # stabilityai/stable-diffusion-xl-base-1.0 unet/diffusion_pytorch_model.safetensors
    "sdxl_vae": 334_643_268,  # stabilityai/stable-diffusion-xl-base-1.0 vae/diffusion_pytorch_model.safetensors
    "sd15_vae": 334_643_276,  # runwayml/stable-diffusion-v1-5 vae/…: 2022 attention key names, 8 header bytes more
}

# diffusers 0.6 (2022) named the VAE's attention projections query/key/value/proj_attn.
LEGACY_VAE_KEYS = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}


def fp32_safetensors_bytes(state_dict: dict) -> int:
    """The size of ``safetensors.torch.save_file(state_dict, metadata={"format": "pt"})`` in fp32, from shapes alone."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, tensor in sorted(state_dict.items()):
        size = tensor.numel() * 4
        header[name] = {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    return 8 + len(text) + (-len(text) % 8) + offset


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMETERS))
def test_configs_build_on_meta_with_the_published_parameter_counts(name):
    model = A.build(name)
    assert all(p.is_meta for p in model.parameters())
    assert A.parameter_count(name) == sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMETERS[name]


def test_every_component_is_counted():
    assert set(A.names()) == set(PUBLISHED_PARAMETERS)


@pytest.mark.parametrize("name", sorted(PUBLISHED_FILE_BYTES))
def test_state_dicts_match_the_published_checkpoint_files_to_the_byte(name):
    state = A.build(name).state_dict()
    if name == "sd15_vae":
        renamed = {}
        for key, value in state.items():
            for new, old in LEGACY_VAE_KEYS.items():
                key = key.replace(new, old)
            renamed[key] = value
        state = renamed
    assert fp32_safetensors_bytes(state) == PUBLISHED_FILE_BYTES[name]


def test_motion_adapter_v2_has_the_mid_block_its_published_size_needs():
    """Only the rounded size of the v1-5-2 file is published (1.82 GB; v1-5, without the mid-block motion
    module and with 24 positions: 1.67 GB). Its state dict also holds the sinusoidal position tables."""
    kwargs = A.init_kwargs("animatediff_motion_adapter_v1_5_2")
    assert kwargs["use_motion_mid_block"] and kwargs["motion_max_seq_length"] == 32
    v2 = A.build("animatediff_motion_adapter_v1_5_2").state_dict()
    assert round(fp32_safetensors_bytes(v2) / 1e9, 2) == 1.82
    with torch.device("meta"):
        v1 = type(A.build("animatediff_motion_adapter_v1_5_2"))(
            **{**kwargs, "use_motion_mid_block": False, "motion_max_seq_length": 24}
        ).state_dict()
    assert round(fp32_safetensors_bytes(v1) / 1e9, 2) == 1.67


def test_flux1_dev_matches_its_published_file_sizes():
    """Only rounded sizes are published: the bf16 transformer 23.8 GB (``flux1-dev.safetensors``), the fp32
    autoencoder 335 MB (``ae.safetensors``)."""
    assert round(2 * A.parameter_count("flux1_dev_transformer") / 1e9, 1) == 23.8
    assert round(fp32_safetensors_bytes(A.build("flux1_dev_vae").state_dict()) / 1e6) == 335
    vae = A.init_kwargs("flux1_dev_vae")
    assert (vae["latent_channels"], vae["scaling_factor"], vae["shift_factor"]) == (16, 0.3611, 0.1159)


def test_only_retired_keys_of_the_published_configs_are_dropped(monkeypatch):
    for name in A.COMPONENTS:
        config = A.load_config(name)
        dropped = {k for k in config if not k.startswith("_")} - set(A.init_kwargs(name))
        expected = (
            {"motion_activation_fn", "motion_attention_bias", "motion_cross_attention_dim"}
            if config["_class_name"] == "MotionAdapter"
            else set()
        )
        assert dropped == expected, name
    bad = {**A.load_config("sd15_vae"), "not_a_vae_argument": 1}
    monkeypatch.setattr(A, "load_config", lambda name: bad)
    with pytest.raises(ValueError, match="not_a_vae_argument"):
        A.init_kwargs("sd15_vae")


# The sizes the Hugging Face Hub shows for the published files.
PUBLISHED_CONFIG_SIZES = {
    "sd15_unet": "743 Bytes",
    "sd15_vae": "547 Bytes",
    "sd15_scheduler": "308 Bytes",
    "sdxl_unet": "1.68 kB",
    "sdxl_vae": "642 Bytes",
    "sdxl_scheduler": "479 Bytes",
    "animatediff_motion_adapter_v1_5_2": "455 Bytes",
}


def test_config_files_are_the_published_text_to_the_byte():
    assert set(PUBLISHED_CONFIG_SIZES) == (set(A.COMPONENTS) | set(A.SCHEDULERS)) - A.VALUES_ONLY
    for name, shown in PUBLISHED_CONFIG_SIZES.items():
        size = (A.CONFIG_DIR / f"{name}.json").stat().st_size
        assert (f"{size} Bytes" if size < 1000 else f"{size / 1000:.2f} kB") == shown, name


def _encode(arch: str):
    """Prompt embeddings of the tiny text encoders, as the pipelines compute them (penultimate layer for SDXL)."""
    parts = A.text_encoders(arch)
    ids = parts["tokenizer"](
        "a red fox", padding="max_length", max_length=A.TOKENS, truncation=True, return_tensors="pt"
    ).input_ids
    assert ids.shape == (1, 77)
    with torch.no_grad():
        if arch != "sdxl":
            return parts, parts["text_encoder"](ids)[0], {}
        first = parts["text_encoder"](ids, output_hidden_states=True).hidden_states[-2]
        second = parts["text_encoder_2"](ids, output_hidden_states=True)
    hidden = torch.cat([first, second.hidden_states[-2]], dim=-1)
    return parts, hidden, {"text_embeds": second.text_embeds, "time_ids": torch.zeros(1, 6)}


@pytest.mark.parametrize("arch", ["animatediff", "sd15", "sdxl"])
def test_tiny_text_encoders_condition_the_real_unet(arch):
    parts, hidden, added = _encode(arch)
    unet_config = A.load_config(A.ARCHS[arch]["unet"])
    assert hidden.shape == (1, 77, unet_config["cross_attention_dim"])
    for name, module in parts.items():
        if name.startswith("text_encoder"):
            assert module.config.num_hidden_layers == 1
            assert sum(p.numel() for p in module.parameters()) < 10_000_000
    if arch == "sdxl":
        width = added["text_embeds"].shape[-1] + 6 * unet_config["addition_time_embed_dim"]
        assert width == unet_config["projection_class_embeddings_input_dim"] == 2816
    # The real UNet accepts them: a forward pass on the meta device checks every shape, computing nothing.
    unet = A.build(A.ARCHS[arch]["unet"])
    meta = {k: v.to("meta") for k, v in added.items()}
    if arch == "animatediff":
        sample = torch.empty(1, 4, 2, 8, 8, device="meta")  # (batch, channels, frames, h, w)
        hidden = hidden.repeat_interleave(2, dim=0)  # the pipeline repeats prompts per frame
    else:
        sample = torch.empty(1, 4, 16, 16, device="meta")
    kwargs = {"added_cond_kwargs": meta} if meta else {}
    out = unet(sample, torch.tensor(999, device="meta"), encoder_hidden_states=hidden.to("meta"), **kwargs).sample
    assert out.shape == sample.shape


@pytest.mark.parametrize(
    "arch, pipeline, unet, scheduler",
    [
        ("sd15", "StableDiffusionPipeline", "UNet2DConditionModel", "DDIMScheduler"),
        ("sdxl", "StableDiffusionXLPipeline", "UNet2DConditionModel", "EulerDiscreteScheduler"),
        ("animatediff", "AnimateDiffPipeline", "UNetMotionModel", "DDIMScheduler"),
    ],
)
def test_build_pipeline_assembles_on_meta(arch, pipeline, unet, scheduler):
    pipe = A.build_pipeline(arch, device="meta")
    assert (type(pipe).__name__, type(pipe.unet).__name__, type(pipe.scheduler).__name__) == (pipeline, unet, scheduler)
    assert sum(p.numel() for p in pipe.unet.parameters()) == PUBLISHED_PARAMETERS[A.ARCHS[arch]["unet"]]
    assert sum(p.numel() for p in pipe.vae.parameters()) == 83_653_863
    assert pipe.tokenizer.model_max_length == 77
    config = pipe.scheduler.config
    betas = (config.num_train_timesteps, config.beta_start, config.beta_end, config.steps_offset)
    assert betas == (1000, 0.00085, 0.012, 1)
    assert config.beta_schedule == ("linear" if arch == "animatediff" else "scaled_linear")
    assert config.prediction_type == "epsilon"
    if arch == "animatediff":
        assert sum(p.numel() for p in pipe.motion_adapter.parameters()) == 453_209_280


def test_flux1_dev_pipeline_assembles_on_meta_and_its_stand_ins_condition_the_transformer():
    """FluxPipeline with the published transformer, VAE and flow scheduler; its tiny CLIP gives the 768-wide pooled
    vector and its tiny T5 512 tokens 4096 wide, which the real transformer takes (a forward pass on meta)."""
    pipe = A.build_pipeline("flux1-dev", device="meta")
    assert type(pipe).__name__ == "FluxPipeline" and type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert pipe.scheduler.config.use_dynamic_shifting and pipe.default_sample_size == 128
    assert sum(p.numel() for p in pipe.transformer.parameters()) == PUBLISHED_PARAMETERS["flux1_dev_transformer"]
    parts = A.text_encoders("flux1-dev")  # on the CPU, to encode a real prompt
    assert parts["text_encoder"].config.num_hidden_layers == parts["text_encoder_2"].config.num_layers == 1
    assert all(sum(p.numel() for p in parts[n].parameters()) < 10_000_000 for n in ("text_encoder", "text_encoder_2"))
    encoder = type(pipe)(transformer=pipe.transformer, vae=pipe.vae, scheduler=pipe.scheduler, **parts)
    with torch.no_grad():
        prompt, pooled, text_ids = encoder.encode_prompt("a red fox", prompt_2=None, device="cpu")
    assert prompt.shape == (1, A.T5_TOKENS, 4096) and pooled.shape == (1, 768)
    tokens = 64  # 16² latents packed 2×2
    out = pipe.transformer(
        torch.empty(1, tokens, 64, device="meta"),
        encoder_hidden_states=prompt.to("meta"),
        pooled_projections=pooled.to("meta"),
        timestep=torch.ones(1, device="meta"),
        img_ids=torch.zeros(tokens, 3, device="meta"),
        txt_ids=text_ids.to("meta"),
        guidance=torch.ones(1, device="meta"),
    ).sample
    assert out.shape == (1, tokens, 64)


def test_build_on_cpu_gives_random_weights_in_the_dtype():
    vae = A.build("sd15_vae", device="cpu", dtype=torch.bfloat16, seed=1)
    weights = [p for p in vae.parameters()]
    assert all(p.device.type == "cpu" and p.dtype == torch.bfloat16 and not p.requires_grad for p in weights)
    conv = vae.encoder.conv_in.weight.float()
    assert torch.isfinite(conv).all() and 0 < conv.std() < 1
    assert not vae.training
