"""The real SD 1.5, SDXL, AnimateDiff, FLUX.1-dev and Wan 2.1 (T2V 1.3B, 14B) architectures with random weights — for
cost measurement only.

The weights are random: nothing built here produces a meaningful image. Weights do not change FLOPs
or memory, so these models measure the time and memory a method costs at real scale exactly
(docs/architecture.md, "Counting cost without weights"); the pixel emoji model measures quality.

The component configs are the published ``config.json`` files, kept verbatim in ``configs/`` (FLUX.1-dev's as
their published keys and values; Wan 2.1's as the values of public code, diffusers' conversion script; sources in
``configs/README.md``).
:func:`build_pipeline` assembles whole pipelines from them with tiny stand-in
text encoders: one CLIP layer whose hidden sizes match the UNet's ``cross_attention_dim`` (and, for
SDXL, a pooled projection that makes the added embedding ``projection_class_embeddings_input_dim``
wide). The text encoder runs once per prompt and its cost does not depend on the output size, so it
does not matter to the resolution methods; the prompt length stays the real 77 tokens, because the
UNet's cross-attention cost depends on it. AnimateDiff's pipeline gets its ``UNetMotionModel``
(``animatediff_unet``: the SD 1.5 UNet with the adapter's motion modules) built directly, instead of
merging a 2D UNet with the adapter, which would hold both UNets at once. FLUX.1-dev gets a CLIP layer (its
pooled output) and a one-layer T5 encoder of the transformer's ``joint_attention_dim``, with the real 512 T5 tokens.

Resident size in fp32: SD 1.5 pipeline ≈ 3.8 GB, SDXL ≈ 10.6 GB, AnimateDiff ≈ 7.4 GB (it keeps the
adapter besides the merged UNet, as diffusers does), FLUX.1-dev ≈ 48 GB (build it on ``meta``); half that in
fp16/bf16.

    from hiresdiff.cost.architectures import build, build_pipeline, parameter_count
    parameter_count("sdxl_unet")               # 2_567_463_684, counted on the meta device
    unet = build("sd15_unet", device="cpu")    # random fp32 weights
    pipe = build_pipeline("sd15", device="cpu")
"""

from __future__ import annotations

import inspect
import json
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import diffusers
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, UNetMotionModel
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
)

from hiresdiff.models.emoji_tokenizer import build_t5_tokenizer

CONFIG_DIR = Path(__file__).parent / "configs"

#: Wan 2.1's values come from public code: the script that converts the released weights to diffusers' format
WAN_SCRIPT = "huggingface/diffusers scripts/convert_wan_to_diffusers.py"
#: Component name (a file ``configs/<name>.json``) → where its published config lives.
COMPONENTS = {
    "sd15_unet": "runwayml/stable-diffusion-v1-5 · unet/config.json",
    "sd15_vae": "runwayml/stable-diffusion-v1-5 · vae/config.json",
    "sdxl_unet": "stabilityai/stable-diffusion-xl-base-1.0 · unet/config.json",
    "sdxl_vae": "stabilityai/stable-diffusion-xl-base-1.0 · vae/config.json",
    "animatediff_motion_adapter_v1_5_2": "guoyww/animatediff-motion-adapter-v1-5-2 · config.json",
    "flux1_dev_transformer": "black-forest-labs/FLUX.1-dev · transformer/config.json",
    "flux1_dev_vae": "black-forest-labs/FLUX.1-dev · vae/config.json",
    "wan2_1_t2v_1_3b_transformer": f"{WAN_SCRIPT} · get_transformer_config('Wan-T2V-1.3B')",
    "wan2_1_t2v_14b_transformer": f"{WAN_SCRIPT} · get_transformer_config('Wan-T2V-14B')",
    "wan2_1_vae": f"{WAN_SCRIPT} · convert_vae(): AutoencoderKLWan()'s defaults",
}
#: Scheduler configs (``configs/<name>.json``), also published; not models, so not in COMPONENTS.
SCHEDULERS = {
    "sd15_scheduler": "runwayml/stable-diffusion-v1-5 · scheduler/scheduler_config.json",
    "sdxl_scheduler": "stabilityai/stable-diffusion-xl-base-1.0 · scheduler/scheduler_config.json",
    "flux1_dev_scheduler": "black-forest-labs/FLUX.1-dev · scheduler/scheduler_config.json",
    "wan2_1_scheduler": f"{WAN_SCRIPT} · FlowMatchEulerDiscreteScheduler(shift=3.0)",
}
#: Configs stored as the published keys and values (read from copies of the files, see configs/README.md), not as
#: their byte-exact text: the other files are verbatim.
VALUES_ONLY = {"flux1_dev_transformer", "flux1_dev_vae", "flux1_dev_scheduler"} | {
    name
    for name in (*COMPONENTS, *SCHEDULERS)
    if name.startswith("wan2_1")  # values from public code (see above)
}
#: Components derived from published configs rather than stored: the UNetMotionModel that
#: ``AnimateDiffPipeline`` makes of the SD 1.5 UNet and the motion adapter (``UNetMotionModel.from_unet2d``).
DERIVED = {
    "animatediff_unet": "UNetMotionModel.from_unet2d(sd15_unet, animatediff_motion_adapter_v1_5_2)",
}
#: Pipeline → its model components.
ARCHS = {
    "sd15": {"unet": "sd15_unet", "vae": "sd15_vae"},
    "sdxl": {"unet": "sdxl_unet", "vae": "sdxl_vae"},
    "animatediff": {
        "unet": "animatediff_unet",
        "vae": "sd15_vae",
        "motion_adapter": "animatediff_motion_adapter_v1_5_2",
    },
    "flux1-dev": {"transformer": "flux1_dev_transformer", "vae": "flux1_dev_vae"},
    "wan2.1-1.3b": {"transformer": "wan2_1_t2v_1_3b_transformer", "vae": "wan2_1_vae"},
    "wan2.1-14b": {"transformer": "wan2_1_t2v_14b_transformer", "vae": "wan2_1_vae"},
}
#: Video architectures: their runs take frames (Wan's default clip: 81 frames, 5 s at 16 fps).
VIDEO_FRAMES = {"wan2.1-1.3b": 81, "wan2.1-14b": 81}

#: Published keys that the installed diffusers no longer takes; each holds the value that is now fixed
#: in the code (MotionAdapter: GEGLU feed-forward, no attention bias, self-attention only), so
#: dropping them changes nothing. Any other unknown key is an error.
_RETIRED_KEYS = {
    "MotionAdapter": {
        "motion_activation_fn": "geglu",
        "motion_attention_bias": False,
        "motion_cross_attention_dim": None,
    },
}

# Tiny stand-in text encoders.
TOKENS = 77  # the real CLIP prompt length: the UNet's cross-attention cost depends on it
T5_TOKENS = 512  # FLUX.1-dev's and Wan's T5 prompt length (their pipelines' max_sequence_length)
TEXT_LAYERS = 1
TEXT_INTERMEDIATE = 256
PROMPT = "a photograph of an astronaut riding a horse"  # the prompt of the cost runs; the T5 stand-in learns its pieces


def names() -> tuple[str, ...]:
    """The model components that :func:`build` knows."""
    return tuple(COMPONENTS) + tuple(DERIVED)


def load_config(name: str) -> dict:
    """The config of ``name``: for a component or scheduler the published one, as stored in
    ``configs/<name>.json``; for a derived component the config diffusers derives (see ``DERIVED``)."""
    if name in DERIVED:
        return json.loads(_motion_unet_config())
    if name not in COMPONENTS and name not in SCHEDULERS:
        raise ValueError(f"unknown config {name!r}; known: {sorted(names()) + sorted(SCHEDULERS)}")
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


@cache
def _motion_unet_config() -> str:
    """The UNetMotionModel config that AnimateDiffPipeline derives from the SD 1.5 UNet and the adapter (as JSON)."""
    with torch.device("meta"):
        unet = UNetMotionModel.from_unet2d(
            build("sd15_unet"), build("animatediff_motion_adapter_v1_5_2"), load_weights=False
        )
    return unet.to_json_string()


def model_class(name: str):
    return getattr(diffusers, load_config(name)["_class_name"])


def init_kwargs(name: str) -> dict:
    """The config's constructor arguments for the installed diffusers (private ``_`` keys and retired keys removed)."""
    config = load_config(name)
    cls = model_class(name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    retired = _RETIRED_KEYS.get(config["_class_name"], {})
    kwargs = {}
    for key, value in config.items():
        if key.startswith("_"):
            continue
        if key in accepted:
            kwargs[key] = value
        elif key in retired and retired[key] == value:
            continue
        else:
            raise ValueError(f"{name}: {cls.__name__} takes no {key}={value!r}; the config or diffusers changed")
    return kwargs


def build(name: str, device: str | torch.device = "meta", dtype: torch.dtype = torch.float32, seed: int = 0):
    """The model ``name`` with random weights on ``device`` in ``dtype``, in eval mode without gradients.

    ``device="meta"`` allocates nothing (shapes only: for counting). Otherwise the module is created on
    ``device`` with diffusers' default random initialisation (seeded) in fp32, then cast to ``dtype``.
    """
    cls = model_class(name)
    kwargs = init_kwargs(name)
    with _seeded(device, seed):
        model = cls(**kwargs)
    if dtype != torch.float32:
        # nn.Module.to: ModelMixin.to would warn about fp32-only modules, of which these models have none.
        torch.nn.Module.to(model, dtype=dtype)
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    return model.eval().requires_grad_(False)


@contextmanager
def _seeded(device, seed: int):
    """Create modules on ``device`` from the global RNG seeded with ``seed``; the caller's RNG state is restored."""
    device = torch.device(device)
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.device(device):
        torch.manual_seed(seed)
        yield


@cache
def parameter_count(name: str) -> int:
    """The number of parameters of ``name``, counted on the meta device (no memory, well under a second)."""
    return sum(p.numel() for p in build(name, device="meta").parameters())


def tokenizer():
    """A CLIP tokenizer with one token per printable ASCII character (no merges), padding to 77 tokens."""
    chars = [chr(i) for i in range(33, 127)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars + [c + "</w>" for c in chars]:
        vocab[c] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=TOKENS)


def text_encoder(hidden_size: int, projection_dim: int | None = None, device="cpu", dtype=torch.float32, seed: int = 0):
    """A 1-layer CLIP text model of width ``hidden_size``; with a text projection of ``projection_dim`` if given."""
    vocab_size = len(tokenizer().get_vocab())
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=TEXT_INTERMEDIATE,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=hidden_size // 64,
        max_position_embeddings=TOKENS,
        projection_dim=projection_dim or hidden_size,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_act="quick_gelu",
    )
    cls = CLIPTextModel if projection_dim is None else CLIPTextModelWithProjection
    with _seeded(device, seed):
        model = cls(config)
    return model.to(dtype=dtype).eval().requires_grad_(False)


class UnmaskedT5EncoderModel(T5EncoderModel):
    """The stand-in T5 of a pipeline that passes its padding mask (Wan): the mask is ignored, because transformers
    reads its values (to skip an all-ones mask), which a meta run does not have; a mask changes no FLOP or byte."""

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        return super().forward(input_ids=input_ids, **kwargs)


def t5_encoder(hidden_size: int, device="cpu", dtype=torch.float32, seed: int = 0, cls=T5EncoderModel):
    """A 1-layer T5 encoder of width ``hidden_size`` (one 64-wide head, feed-forward 256) and its tokenizer, which
    spells printable ASCII: FLUX's stand-in for T5-XXL, whose output width the transformer's joint attention takes."""
    t5_tokenizer = build_t5_tokenizer([PROMPT], alphabet="".join(chr(i) for i in range(33, 127)), vocab_size=128)
    config = T5Config(
        vocab_size=len(t5_tokenizer),
        d_model=hidden_size,
        d_kv=64,
        d_ff=TEXT_INTERMEDIATE,
        num_layers=TEXT_LAYERS,
        num_heads=1,
        feed_forward_proj="gated-gelu",
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    with _seeded(device, seed):
        model = cls(config)
    return model.to(dtype=dtype).eval().requires_grad_(False), t5_tokenizer


def text_encoders(arch: str, device="cpu", dtype=torch.float32) -> dict:
    """The tiny text encoders and tokenizers of ``arch``, sized to its denoiser's conditioning inputs.

    SD 1.5 / AnimateDiff: one encoder of width 768 (= cross_attention_dim). SDXL: widths 768 and 1280
    (concatenated: cross_attention_dim 2048) and a pooled projection of 1280, so that the added
    embedding is 1280 + 6 time ids × addition_time_embed_dim 256 = 2816 = projection_class_embeddings_input_dim.
    FLUX.1-dev: CLIP of width 768 (its pooled output = pooled_projection_dim) and T5 of width 4096
    (= joint_attention_dim), prompts padded to 512 T5 tokens as FluxPipeline pads them. Wan 2.1: one T5 of width 4096
    (= text_dim; UMT5-XXL's), 512 tokens as WanPipeline pads them.
    """
    if arch.startswith("wan"):
        transformer = load_config(ARCHS[arch]["transformer"])
        t5, t5_tokenizer = t5_encoder(
            transformer["text_dim"], device=device, dtype=dtype, seed=1, cls=UnmaskedT5EncoderModel
        )
        return {"text_encoder": t5, "tokenizer": t5_tokenizer}
    if arch == "flux1-dev":
        transformer = load_config(ARCHS[arch]["transformer"])
        t5, t5_tokenizer = t5_encoder(transformer["joint_attention_dim"], device=device, dtype=dtype, seed=1)
        return {
            "text_encoder": text_encoder(transformer["pooled_projection_dim"], device=device, dtype=dtype),
            "tokenizer": tokenizer(),
            "text_encoder_2": t5,
            "tokenizer_2": t5_tokenizer,
        }
    unet = load_config(ARCHS[arch]["unet"])
    if arch == "sdxl":
        pooled = unet["projection_class_embeddings_input_dim"] - 6 * unet["addition_time_embed_dim"]
        second = unet["cross_attention_dim"] - 768
        return {
            "text_encoder": text_encoder(768, device=device, dtype=dtype),
            "tokenizer": tokenizer(),
            "text_encoder_2": text_encoder(second, projection_dim=pooled, device=device, dtype=dtype, seed=1),
            "tokenizer_2": tokenizer(),
        }
    return {
        "text_encoder": text_encoder(unet["cross_attention_dim"], device=device, dtype=dtype),
        "tokenizer": tokenizer(),
    }


def scheduler(arch: str):
    """SD 1.5: DDIM with the published SD 1.5 betas (scaled_linear 0.00085–0.012, 1000 steps, steps_offset 1).
    SDXL: EulerDiscrete with its published config. AnimateDiff: DDIM with linear betas, linspace spacing,
    as the diffusers AnimateDiff documentation sets it. FLUX.1-dev: FlowMatchEulerDiscrete with its published config
    (resolution-dependent shift). Wan 2.1: FlowMatchEulerDiscrete with shift 3 (the conversion script's)."""
    if arch.startswith("wan"):
        return FlowMatchEulerDiscreteScheduler.from_config(load_config("wan2_1_scheduler"))
    if arch == "flux1-dev":
        return FlowMatchEulerDiscreteScheduler.from_config(load_config("flux1_dev_scheduler"))
    if arch == "sdxl":
        return EulerDiscreteScheduler.from_config(load_config("sdxl_scheduler"))
    if arch == "animatediff":
        return DDIMScheduler.from_config(
            load_config("sd15_scheduler"),
            beta_schedule="linear",
            clip_sample=False,
            timestep_spacing="linspace",
            steps_offset=1,
        )
    return DDIMScheduler.from_config(load_config("sd15_scheduler"))


def build_pipeline(arch: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """The ``arch`` pipeline (one of ``ARCHS``) with random weights on ``device``.

    Real UNet or transformer / VAE / motion adapter from the published configs, tiny text encoders (see the module
    docstring), no safety checker, no watermarker. ``device="meta"`` assembles it without memory.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {sorted(ARCHS)}; got {arch!r}")
    parts = {role: build(name, device=device, dtype=dtype) for role, name in ARCHS[arch].items()}
    parts.update(text_encoders(arch, device=device, dtype=dtype))
    parts["scheduler"] = scheduler(arch)
    if arch == "sd15":
        pipe = diffusers.StableDiffusionPipeline(
            **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    elif arch == "sdxl":
        pipe = diffusers.StableDiffusionXLPipeline(**parts, add_watermarker=False)
    elif arch == "flux1-dev":
        pipe = diffusers.FluxPipeline(**parts)
    elif arch.startswith("wan"):
        pipe = diffusers.WanPipeline(**parts)
    else:
        # Given the UNetMotionModel directly (random weights, like the rest), the pipeline skips merging a 2D
        # UNet with the adapter; it still holds the adapter, as a real AnimateDiff pipeline does.
        pipe = diffusers.AnimateDiffPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe
