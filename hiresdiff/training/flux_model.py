"""Training recipe of ``emoji-flux``: a small FLUX-architecture rectified-flow pipeline on 32² emoji.

The ground truth of the flow-matching transformer path (issue 21): a ``FluxTransformer2DModel`` (dual-stream
joint-attention blocks, then single-stream blocks, 3-axis RoPE) in the latent space of ``emoji-latent``'s VAE
(f = 2: 32² pixels ↔ 4 × 16² latents, packed 2×2 by ``FluxPipeline`` into 8 × 8 = 64 tokens of 16 channels).
Conditioning as FLUX.1: the pooled output of a CLIP text encoder (``emoji-latent``'s, fine-tuned) and the
token states of a small T5 encoder trained from scratch with an offline T5 tokenizer
(:func:`hiresdiff.models.emoji_tokenizer.build_t5_tokenizer`), prompts padded to :data:`T5_LENGTH` tokens
(pass ``max_sequence_length=24`` to the pipeline; hiresdiff's loader does it from the folder's ``hiresdiff.json``).
10 % of prompts are
dropped to "" so that true classifier-free guidance (``true_cfg_scale`` with ``negative_prompt=""``) works;
the transformer has no guidance embedding (it is not guidance-distilled).

Loss: rectified flow, x_t = (1 − t)·x₀ + t·ε, the transformer predicts v = ε − x₀, t logit-normal (SD3's
training density; :func:`hiresdiff.training.loop.flow_loss`). The scheduler is FLUX's
``FlowMatchEulerDiscreteScheduler`` with dynamic shifting, its sequence lengths scaled as FLUX.1's to the
trained size: μ = 0.5 at a quarter of the trained token count, 1.15 at the trained 64 tokens (FLUX.1-dev:
256 and 4096 tokens), extrapolated linearly above, as FLUX's pipeline does.

Resumable from ``--run-dir``/transformer_state.pt; ``--ship FOLDER`` writes the shipped ``FluxPipeline`` folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

from hiresdiff.data import emoji
from hiresdiff.denoisers.layouts import FluxLayout
from hiresdiff.models import EMOJI_LATENT_DIR
from hiresdiff.models.emoji_tokenizer import build_t5_tokenizer
from hiresdiff.training.latent_model import encode_latents
from hiresdiff.training.loop import Phase, add_run_arguments, flow_loss, replace_folder, start_run, write_shipped

T5_LENGTH = 24  # the longest emoji name is 22 T5 tokens with its </s>
TRANSFORMER_CONFIG = dict(
    patch_size=1,
    in_channels=16,
    num_layers=2,
    num_single_layers=5,
    attention_head_dim=32,
    num_attention_heads=6,
    joint_attention_dim=128,
    pooled_projection_dim=128,
    guidance_embeds=False,
    axes_dims_rope=(8, 12, 12),
)
T5_CONFIG = dict(
    d_model=128,
    d_kv=32,
    d_ff=256,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=8,
    feed_forward_proj="gated-gelu",
    dropout_rate=0.0,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    shift=1.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=16,
    max_image_seq_len=64,
)
PROMPT_DROPOUT = 0.1
# what hiresdiff's loader reads from the shipped folder (hiresdiff.loading.pipelines.apply_model_settings):
# the trained size FluxPipeline cannot know, the prompt length the T5 encoder was trained with, and the CFG scale
# that meets the quality bar (benchmarks/results/flux_quality.md: 4 — at 7.5 the FD is 1.7× the real floor)
HIRESDIFF_SETTINGS = {"trained_size": 32, "call": {"max_sequence_length": T5_LENGTH, "guidance_scale": 4.0}}


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) latents → FLUX's (B, h/2·w/2, 4C) tokens (the sampling core's FLUX layout)."""
    return FluxLayout().from_grid(latents)


def flux_v(transformer, text_encoder, text_encoder_2):
    """``model(x_t, t)`` on packed latents for :func:`flow_loss`, prompts set as ``model.clip_ids``/``model.t5_ids``."""

    def model(x_t, t):
        grid = int(x_t.shape[1] ** 0.5)
        img_ids = FluxPipeline._prepare_latent_image_ids(len(x_t), grid, grid, x_t.device, x_t.dtype)
        txt = text_encoder_2(model.t5_ids)[0]
        return transformer(
            x_t,
            encoder_hidden_states=txt,
            pooled_projections=text_encoder(model.clip_ids).pooler_output,
            timestep=t,
            img_ids=img_ids,
            txt_ids=torch.zeros(txt.shape[1], 3),
            return_dict=False,
        )[0]

    return model


def components(args, train: emoji.EmojiData) -> dict:
    """The untrained pipeline parts: emoji-latent's VAE and CLIP text encoder and tokenizer, a new T5 encoder with an
    offline tokenizer, a new transformer and FLUX's scheduler."""
    source = Path(args.latent_pipeline or EMOJI_LATENT_DIR)
    vae = AutoencoderKL.from_pretrained(source / "vae", dtype=torch.float32)
    vae.register_to_config(shift_factor=0.0)  # FluxPipeline adds shift_factor when decoding
    saved = Path(args.run_dir) / "tokenizer_2"  # built once per run: a resumed run keeps its token ids
    if not saved.is_dir():
        tokenizer_2 = build_t5_tokenizer(train.names, alphabet="".join(emoji.load(32, "test", args.data).names))
        tokenizer_2.model_max_length = T5_LENGTH
        replace_folder(saved, tokenizer_2.save_pretrained)
    tokenizer_2 = T5Tokenizer.from_pretrained(saved)
    return dict(
        vae=vae.requires_grad_(False),
        tokenizer=CLIPTokenizer.from_pretrained(source / "tokenizer"),
        text_encoder=CLIPTextModel.from_pretrained(source / "text_encoder", dtype=torch.float32),
        tokenizer_2=tokenizer_2,
        text_encoder_2=T5EncoderModel(T5Config(vocab_size=len(tokenizer_2), **T5_CONFIG)),
        transformer=FluxTransformer2DModel(**TRANSFORMER_CONFIG),
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG),
    )


def prompt_ids(tokenizer, names: list[str], length: int) -> torch.Tensor:
    return tokenizer(names, padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids


def train(args) -> None:
    run_dir = start_run(args)
    train_split = emoji.load(32, "train", args.data)
    parts = components(args, train_split)
    trained = {k: parts[k] for k in ("transformer", "text_encoder", "text_encoder_2")}
    phase = Phase("transformer", trained, run_dir, args, args.steps, args.lr)
    mean, std = encode_latents(parts["vae"], train_split.images)
    names = train_split.names * 2  # the latents of the mirror images follow
    clip_len = parts["tokenizer"].model_max_length
    clip_ids, t5_ids = (
        prompt_ids(parts["tokenizer"], names, clip_len),
        prompt_ids(parts["tokenizer_2"], names, T5_LENGTH),
    )
    empty_clip, empty_t5 = (
        prompt_ids(parts["tokenizer"], [""], clip_len),
        prompt_ids(parts["tokenizer_2"], [""], T5_LENGTH),
    )
    model = flux_v(*trained.values())

    def loss():
        idx = torch.randint(0, len(mean), (args.batch_size,))
        drop = (torch.rand(args.batch_size) < PROMPT_DROPOUT).view(-1, 1)
        model.clip_ids, model.t5_ids = (
            torch.where(drop, empty_clip, clip_ids[idx]),
            torch.where(drop, empty_t5, t5_ids[idx]),
        )
        return flow_loss(model, pack(mean[idx] + std[idx] * torch.randn_like(std[idx])))

    def export():
        pipe = FluxPipeline(**{**parts, **phase.ema_modules()})
        info = {"step": phase.step, "wall_seconds": round(phase.wall)}
        replace_folder(
            run_dir / "pipeline",
            lambda folder: (
                pipe.save_pretrained(folder),
                (folder / "training.json").write_text(json.dumps(info) + "\n"),
            ),
        )

    if not phase.done:
        phase.run(loss, args.save_every, args.log_every, export)
    if args.ship:
        ship(run_dir, Path(args.ship), train_split, emoji.load(32, "test", args.data))


def ship(run_dir: Path, out_dir: Path, train: emoji.EmojiData, test: emoji.EmojiData) -> None:
    """Write the shipped pipeline to ``out_dir``: the EMA weights of ``run_dir``/pipeline (transformer and VAE in fp16,
    which diffusers loads as fp32), ``training.json``, ``prompts.json`` and ``hiresdiff.json``
    (:data:`HIRESDIFF_SETTINGS`); a README.md already there is kept."""
    pipe = FluxPipeline.from_pretrained(Path(run_dir) / "pipeline")
    pipe.transformer.to(torch.float16)
    pipe.vae.to(torch.float16)
    write_shipped(
        pipe,
        run_dir,
        out_dir,
        {"train": train.names, "test": test.names},
        {"hiresdiff.json": json.dumps(HIRESDIFF_SETTINGS, indent=2) + "\n"},
    )


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_run_arguments(p, "emoji-flux")
    p.add_argument(
        "--latent-pipeline",
        default=None,
        help="the emoji-latent folder whose VAE and CLIP encoder are used (default: the shipped one)",
    )
    p.add_argument("--steps", type=int, default=5000, help="optimizer steps of the transformer + text encoders")
    return p
