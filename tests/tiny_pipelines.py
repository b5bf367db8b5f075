"""Tiny seeded diffusers pipelines built from configs, saved with ``save_pretrained`` and loaded back.

Imitates diffusers' ``get_dummy_components``: a few thousand parameters per model, so a 2-step run
takes milliseconds. Every kind is saved once per process into a temporary folder (:func:`saved`);
:func:`load` returns a fresh pipeline read with ``from_pretrained``. Used by the hook tests and by
``benchmarks/ug_pipeline_overhead.py``.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch

TEXT_DIM = 32
KINDS = ("sd15", "sd2v", "sdxl", "animatediff", "controlnet", "t2i_adapter", "pixel", "dit", "flux", "sd3")
T5_DIM = 64  # SD3 pads its two CLIP states (2 × TEXT_DIM) to T5's width
FLOW_TRAINED_LATENT = 8  # the tiny flow pipelines' trained size: 16² pixels


def tokenizer():
    """A CLIP tokenizer with one token per printable ASCII character (no merges); other bytes are unknown."""
    from transformers import CLIPTokenizer

    chars = [chr(i) for i in range(33, 127)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars + [c + "</w>" for c in chars]:
        vocab[c] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)


def text_encoder(with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=TEXT_DIM,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=1000,
        projection_dim=TEXT_DIM,
        max_position_embeddings=16,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def vae(**overrides):
    """A 2-level VAE: vae_scale_factor 2, 4 latent channels."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=2,
        **overrides,
    )


def t5():
    """A T5 encoder with an offline T5 tokenizer (every printable ASCII character is a piece)."""
    from transformers import T5Config, T5EncoderModel

    from hiresdiff.models.emoji_tokenizer import build_t5_tokenizer

    words = ["a red cat", "a blue dog", "a green bird on a tree", "a cat face"]
    t5_tokenizer = build_t5_tokenizer(words, alphabet="".join(chr(i) for i in range(33, 127)), vocab_size=200)
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(t5_tokenizer),
        d_model=T5_DIM,
        d_kv=8,
        d_ff=37,
        num_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config), t5_tokenizer


def flow_scheduler(**overrides):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**overrides)


def flux():
    """A FluxPipeline: 1 dual-stream and 1 single-stream block, packed 2×2, trained size 16² pixels."""
    import diffusers

    text_encoder_2, tokenizer_2 = t5()
    torch.manual_seed(0)
    transformer = diffusers.FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=T5_DIM,
        pooled_projection_dim=TEXT_DIM,
        axes_dims_rope=(2, 2, 4),
    )
    pipe = diffusers.FluxPipeline(
        scheduler=flow_scheduler(use_dynamic_shifting=True, base_image_seq_len=4, max_image_seq_len=16),
        vae=vae(shift_factor=0.1),
        text_encoder=text_encoder(),
        tokenizer=tokenizer(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    pipe.default_sample_size = FLOW_TRAINED_LATENT
    return pipe


def sd3():
    """A StableDiffusion3Pipeline: 2 joint blocks (the first with SD3.5's second, image-only attention), patch 2,
    trained size 16² pixels, its position embedding reaching 32² latents (64² pixels)."""
    import diffusers

    text_encoder_3, tokenizer_3 = t5()
    torch.manual_seed(0)
    transformer = diffusers.SD3Transformer2DModel(
        sample_size=FLOW_TRAINED_LATENT,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=T5_DIM,
        caption_projection_dim=16,
        pooled_projection_dim=2 * TEXT_DIM,
        out_channels=4,
        pos_embed_max_size=16,
        dual_attention_layers=(0,),
        qk_norm="rms_norm",
    )
    return diffusers.StableDiffusion3Pipeline(
        scheduler=flow_scheduler(shift=3.0),
        vae=vae(shift_factor=0.1),
        transformer=transformer,
        text_encoder=text_encoder(with_projection=True),
        tokenizer=tokenizer(),
        text_encoder_2=text_encoder(with_projection=True),
        tokenizer_2=tokenizer(),
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )


QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def qwen_tokenizer(template: str):
    """A byte-level BPE Qwen2Tokenizer: the 256 byte symbols, merges that make every word of ``template`` (the
    pipeline's prompt template) one token as Qwen's own tokenizer does, so that its system prefix is the 34 tokens
    QwenImagePipeline drops, and Qwen's special tokens. Other text is split into bytes, bar what the merges join."""
    import re

    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    split_words = Qwen2Tokenizer(vocab=dict(vocab)).backend_tokenizer.pre_tokenizer.pre_tokenize_str
    merges = []
    for text in re.split("|".join(map(re.escape, QWEN_SPECIAL_TOKENS)), template.format("")):
        for word, _ in split_words(text):
            for i in range(2, len(word) + 1):  # merge each word left to right: "Ġ t", then "Ġt h", ...
                if word[:i] not in vocab:
                    merges.append((word[: i - 1], word[i - 1]))
                    vocab[word[:i]] = len(vocab)
    for token in QWEN_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    return Qwen2Tokenizer(vocab=vocab, merges=merges, additional_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]))


def qwen_image():
    """A QwenImagePipeline: a 1-layer Qwen2.5-VL text encoder (hidden size TEXT_DIM, a 1-block vision tower) with an
    offline byte-level BPE tokenizer, 2 transformer blocks (patch 2, packed 2×2), a 2-level Qwen-Image VAE
    (vae_scale_factor 2, 4 latent channels), trained size 16² pixels."""
    import diffusers
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    template = diffusers.QwenImagePipeline(None, None, None, None, None).prompt_template_encode
    qwen_tok = qwen_tokenizer(template)
    special = dict(zip(QWEN_SPECIAL_TOKENS, qwen_tok.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS))))
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(qwen_tok),
            hidden_size=TEXT_DIM,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=1024,
            rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[2, 3, 3]),  # halves of head dim 16
            bos_token_id=special["<|endoftext|>"],
            eos_token_id=special["<|im_end|>"],
            pad_token_id=special["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=1,
            hidden_size=16,
            intermediate_size=16,
            num_heads=2,
            out_hidden_size=TEXT_DIM,
            fullatt_block_indexes=[0],
        ),
        image_token_id=special["<|image_pad|>"],
        video_token_id=special["<|video_pad|>"],
        vision_start_token_id=special["<|vision_start|>"],
        vision_end_token_id=special["<|vision_end|>"],
    )
    qwen_text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    torch.manual_seed(0)
    transformer = diffusers.QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_DIM,
        axes_dims_rope=(4, 6, 6),
    )
    torch.manual_seed(0)
    qwen_vae = diffusers.AutoencoderKLQwenImage(
        base_dim=4,
        z_dim=4,
        dim_mult=[1, 2],
        num_res_blocks=1,
        temperal_downsample=[False],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )
    pipe = diffusers.QwenImagePipeline(
        scheduler=flow_scheduler(use_dynamic_shifting=True, base_image_seq_len=4, max_image_seq_len=16),
        vae=qwen_vae,
        text_encoder=qwen_text_encoder,
        tokenizer=qwen_tok,
        transformer=transformer,
    )
    pipe.default_sample_size = FLOW_TRAINED_LATENT
    return pipe


def wan():
    """A WanPipeline with Wan 2.1's shapes, scaled down: a T5 encoder (its offline tokenizer), 2 transformer blocks
    (patch (1, 2, 2), heads of 12 channels: 4 rotary channels per axis), a 3-level Wan VAE (spatial factor 4, temporal
    4: clips of 4k + 1 frames), UniPC on flow sigmas with the published flow_shift 3; trained size 32² pixels (passed
    as trained_size: the pipeline's own default is Wan's 480×832)."""
    import diffusers

    text_encoder_2, t5_tokenizer = t5()
    torch.manual_seed(0)
    transformer = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=T5_DIM,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        rope_max_seq_len=64,
    )
    torch.manual_seed(0)
    wan_vae = diffusers.AutoencoderKLWan(
        base_dim=4,
        z_dim=4,
        dim_mult=[1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[True, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
        scale_factor_spatial=4,
        scale_factor_temporal=4,
    )
    scheduler = diffusers.UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0
    )
    return diffusers.WanPipeline(
        tokenizer=t5_tokenizer, text_encoder=text_encoder_2, vae=wan_vae, scheduler=scheduler, transformer=transformer
    )


def wan_image_to_video(kind: str):
    """Wan's image-to-video pipelines on :func:`wan`'s parts: ``"ti2v"``, Wan 2.2 TI2V-5B's way — one transformer for
    text- and image-to-video (``expand_timesteps``: a time per token, the image's latents as the first frame, the
    transformer's input the latents alone); ``"i2v"``, Wan 2.1 I2V's — a transformer that takes a mask and the image's
    latents as channels beside its latents and CLIP image features (a tiny ``CLIPVisionModel``)."""
    import diffusers
    import transformers

    base = wan()
    parts = dict(tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=base.vae, scheduler=base.scheduler)
    if kind == "ti2v":
        return diffusers.WanImageToVideoPipeline(**parts, transformer=base.transformer, expand_timesteps=True)
    config = dict(base.transformer.config)
    config.update(in_channels=4 + 4 + 4, image_dim=16, added_kv_proj_dim=24)  # latents, mask, image latents
    torch.manual_seed(0)
    transformer = diffusers.WanTransformer3DModel.from_config(config)
    vision = transformers.CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    )
    processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return diffusers.WanImageToVideoPipeline(
        **parts,
        transformer=transformer,
        image_encoder=transformers.CLIPVisionModel(vision),
        image_processor=processor,
    )


def unet(**overrides):
    """A 2-level SD-style UNet2DConditionModel (cross-attention in the lower block)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    config = dict(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    config.update(overrides)
    return UNet2DConditionModel(**config)


def scheduler(**overrides):
    from diffusers import DDIMScheduler

    config = dict(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    config.update(overrides)
    return DDIMScheduler(**config)


def _randomize_zero_weights(module) -> None:
    """ControlNets and adapters start with zero output convs; make their residuals non-zero."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for param in module.parameters():
            if not param.any():
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))


def build(kind: str):
    """A freshly initialised pipeline of ``kind`` (one of ``KINDS``, or ``"qwen_image"``)."""
    import diffusers

    common = dict(
        vae=vae(),
        text_encoder=text_encoder(),
        tokenizer=tokenizer(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    if kind == "sd15":
        return diffusers.StableDiffusionPipeline(unet=unet(), scheduler=scheduler(), **common)
    if kind == "sd2v":
        return diffusers.StableDiffusionPipeline(
            unet=unet(use_linear_projection=True), scheduler=scheduler(prediction_type="v_prediction"), **common
        )
    if kind == "controlnet":
        torch.manual_seed(1)
        controlnet = diffusers.ControlNetModel(
            block_out_channels=(8, 16),
            layers_per_block=1,
            in_channels=4,
            cross_attention_dim=TEXT_DIM,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            attention_head_dim=2,
            norm_num_groups=4,
            conditioning_embedding_out_channels=(4, 8),
        )
        _randomize_zero_weights(controlnet)
        return diffusers.StableDiffusionControlNetPipeline(
            unet=unet(), scheduler=scheduler(), controlnet=controlnet, **common
        )
    if kind == "t2i_adapter":
        torch.manual_seed(1)
        adapter = diffusers.T2IAdapter(
            in_channels=3, channels=(8, 16), num_res_blocks=1, downscale_factor=2, adapter_type="full_adapter"
        )
        _randomize_zero_weights(adapter)
        adapter_unet = unet(
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")
        )
        return diffusers.StableDiffusionAdapterPipeline(
            unet=adapter_unet, scheduler=scheduler(), adapter=adapter, **common
        )
    if kind == "pixel":
        torch.manual_seed(0)
        pixel_unet = diffusers.UNet2DModel(
            sample_size=16,
            in_channels=3,
            out_channels=3,
            layers_per_block=1,
            block_out_channels=(8, 16),
            norm_num_groups=4,
            down_block_types=("DownBlock2D",) * 2,
            up_block_types=("UpBlock2D",) * 2,
        )
        return diffusers.DDPMPipeline(unet=pixel_unet, scheduler=diffusers.DDPMScheduler())
    if kind == "dit":
        torch.manual_seed(0)
        transformer = diffusers.DiTTransformer2DModel(
            sample_size=8,
            patch_size=2,
            in_channels=4,
            out_channels=8,
            num_layers=1,
            attention_head_dim=4,
            num_attention_heads=2,
            num_embeds_ada_norm=10,
        )
        return diffusers.DiTPipeline(transformer=transformer, vae=common["vae"], scheduler=scheduler())
    if kind == "flux":
        return flux()
    if kind == "sd3":
        return sd3()
    if kind == "qwen_image":  # not in KINDS: only the tests that name it build it
        return qwen_image()
    if kind == "wan":  # not in KINDS either (tests/test_wan.py)
        return wan()
    if kind in ("wan_ti2v", "wan_i2v"):
        return wan_image_to_video(kind.removeprefix("wan_"))
    if kind == "sdxl":
        sdxl_unet = unet(
            addition_embed_type="text_time",
            addition_time_embed_dim=4,
            projection_class_embeddings_input_dim=6 * 4 + TEXT_DIM,
            cross_attention_dim=2 * TEXT_DIM,
            use_linear_projection=True,
        )
        return diffusers.StableDiffusionXLPipeline(
            vae=common["vae"],
            text_encoder=text_encoder(),
            text_encoder_2=text_encoder(with_projection=True),
            tokenizer=tokenizer(),
            tokenizer_2=tokenizer(),
            unet=sdxl_unet,
            scheduler=scheduler(),
        )
    if kind == "animatediff":
        torch.manual_seed(0)
        adapter = diffusers.MotionAdapter(
            block_out_channels=(8, 16),
            motion_layers_per_block=1,
            motion_num_attention_heads=2,
            motion_norm_num_groups=4,
            motion_max_seq_length=16,
            use_motion_mid_block=False,
        )
        return diffusers.AnimateDiffPipeline(
            vae=common["vae"],
            text_encoder=common["text_encoder"],
            tokenizer=common["tokenizer"],
            unet=unet(),
            motion_adapter=adapter,
            scheduler=scheduler(beta_schedule="linear"),
        )
    raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")


def ip_adapter_state_dict(unet) -> dict:
    """A random IP-Adapter for ``unet`` (image embeddings of size TEXT_DIM, 4 tokens), as diffusers' tests make it."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor
    from diffusers.models.embeddings import ImageProjection

    torch.manual_seed(3)
    cross_attention, key_id = {}, 1
    channels, text_dim = unet.config.block_out_channels, unet.config.cross_attention_dim
    for name in unet.attn_processors:
        if name.endswith("attn1.processor") or "motion_modules" in name:
            continue
        if name.startswith("mid_block"):
            hidden = channels[-1]
        else:
            level = int(name.split(".")[1])
            hidden = channels[level] if name.startswith("down_blocks") else channels[::-1][level]
        weights = IPAdapterAttnProcessor(hidden_size=hidden, cross_attention_dim=text_dim).state_dict()
        cross_attention[f"{key_id}.to_k_ip.weight"] = weights["to_k_ip.0.weight"]
        cross_attention[f"{key_id}.to_v_ip.weight"] = weights["to_v_ip.0.weight"]
        key_id += 2
    projection = ImageProjection(
        cross_attention_dim=text_dim, image_embed_dim=TEXT_DIM, num_image_text_embeds=4
    ).state_dict()
    image_proj = {
        "proj.weight": projection["image_embeds.weight"],
        "proj.bias": projection["image_embeds.bias"],
        "norm.weight": projection["norm.weight"],
        "norm.bias": projection["norm.bias"],
    }
    return {"image_proj": image_proj, "ip_adapter": cross_attention}


@functools.cache
def _root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="hiresdiff-tiny-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@functools.cache
def saved(kind: str) -> Path:
    """The folder holding the ``save_pretrained`` of a tiny pipeline of ``kind`` (built once per process)."""
    path = _root() / kind
    build(kind).save_pretrained(path)
    return path


def load(kind: str):
    """A fresh tiny pipeline of ``kind``, read from its saved folder with ``from_pretrained``, progress bar off."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(saved(kind))
    pipe.set_progress_bar_config(disable=True)
    if kind in ("flux", "qwen_image"):  # both pipelines fix default_sample_size = 128 whatever the weights
        pipe.default_sample_size = FLOW_TRAINED_LATENT
    return pipe
