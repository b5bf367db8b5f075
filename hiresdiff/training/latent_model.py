"""Training recipe of ``emoji-latent``: a small text-to-image latent diffusion pipeline on 32² emoji.

Two phases, each resumable from its own state file in ``--run-dir`` (outside git):

1. **VAE** — an ``AutoencoderKL`` with f = 2 (32² pixels ↔ 4 × 16² latents), trained on the training split at
   32² and on 32² crops of its 64² and 128² versions (so it also reconstructs the finer detail of the
   larger sizes the methods make), loss ‖x − x̂‖₁ + ‖x − x̂‖₂² + β·KL with β = 1e-6. Its
   ``scaling_factor`` is 1 / std of the training latents (Rombach et al. 2022, §4.3.2).
2. **UNet + text encoder** — a ``UNet2DConditionModel`` with cross-attention over a small
   ``CLIPTextModel`` (both trained from scratch, jointly), on the VAE's latents of the training split, the
   prompt being the emoji's name (:mod:`hiresdiff.models.emoji_tokenizer`); 10 % of prompts are dropped
   to "" so that classifier-free guidance and negative prompts work. v-prediction with the cosine schedule,
   min-SNR-5 weighting and an EMA, as the pixel model (:mod:`hiresdiff.training.loop`).

The result is a ``StableDiffusionPipeline`` folder (``--run-dir``/pipeline) that
``StableDiffusionPipeline.from_pretrained`` loads; ``--ship FOLDER`` writes the shipped form of it
(:func:`ship`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from hiresdiff.data import emoji
from hiresdiff.defaults import DEFAULT_SCHEDULER
from hiresdiff.models.emoji_tokenizer import build_tokenizer
from hiresdiff.sampling.schedulers import make_scheduler
from hiresdiff.training.loop import Phase, add_run_arguments, replace_folder, start_run, v_loss, write_shipped

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    sample_size=32,
    layers_per_block=1,
    block_out_channels=(32, 64),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    norm_num_groups=32,
)
UNET_CONFIG = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(64, 128, 128),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=128,
    attention_head_dim=4,
)
TEXT_CONFIG = dict(
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=3,
    num_attention_heads=4,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=1,
)
# as the pixel model: cosine, v-prediction, "trailing" so few-step samplers start from pure noise; latents are not
# bounded to [-1, 1], so samplers that could clip their x₀ estimate must not; steps_offset 1 (which "trailing"
# ignores) because StableDiffusionPipeline warns about any other value
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    prediction_type="v_prediction",
    timestep_spacing="trailing",
    clip_sample=False,
    steps_offset=1,
)
KL_WEIGHT = 1e-6
PROMPT_DROPOUT = 0.1


def vae_batch(sets: list[torch.Tensor], batch_size: int, generator=None) -> torch.Tensor:
    """``batch_size`` random 32² crops, equal parts from each of ``sets`` (N, 3, S, S), randomly flipped."""
    crops = []
    for i, images in enumerate(sets):
        n = batch_size // len(sets) + (i < batch_size % len(sets))
        idx = torch.randint(0, len(images), (n,), generator=generator)
        top, left = (torch.randint(0, images.shape[-1] - 31, (2,), generator=generator) // 2 * 2).tolist()
        crops.append(images[idx, :, top : top + 32, left : left + 32])
    x = torch.cat(crops)
    flip = torch.rand(len(x), generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def vae_loss(vae, x: torch.Tensor, generator=None) -> torch.Tensor:
    posterior = vae.encode(x).latent_dist
    recon = vae.decode(posterior.sample(generator)).sample
    return (recon - x).abs().mean() + ((recon - x) ** 2).mean() + KL_WEIGHT * posterior.kl().mean()


def text_unet_v(unet, text_encoder):
    """``model(x_t, t)`` for :func:`v_loss` with the prompt tokens ``ids`` set on the returned function."""

    def model(x_t, t):
        return unet(x_t, t, encoder_hidden_states=text_encoder(model.ids)[0]).sample

    return model


@torch.no_grad()
def latent_means(vae, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The (unscaled) means of the VAE's posteriors of ``images``, encoded in batches."""
    return torch.cat(
        [vae.encode(images[i : i + batch_size]).latent_dist.mean for i in range(0, len(images), batch_size)]
    )


@torch.no_grad()
def latent_scale(vae, images: torch.Tensor) -> float:
    """1 / std of the VAE's latent means over ``images`` (SD's ``scaling_factor``)."""
    return float(1 / latent_means(vae, images).std())


def train_vae(args, run_dir: Path, train: emoji.EmojiData):
    vae = AutoencoderKL(**VAE_CONFIG)
    phase = Phase("vae", {"vae": vae}, run_dir, args, args.vae_steps, args.vae_lr)
    sets = [train.images] + [emoji.load(size, "train", args.data).images for size in (64, 128)]

    def export():
        ema_vae = phase.ema_modules()["vae"]
        ema_vae.register_to_config(scaling_factor=latent_scale(ema_vae, train.images))
        info = {"step": phase.step, "wall_seconds": round(phase.wall)}
        replace_folder(
            run_dir / "vae",
            lambda folder: (
                ema_vae.save_pretrained(folder),
                (folder / "training.json").write_text(json.dumps(info) + "\n"),
            ),
        )

    if not phase.done:
        phase.run(lambda: vae_loss(vae, vae_batch(sets, args.vae_batch_size)), args.save_every, args.log_every, export)
    return AutoencoderKL.from_pretrained(run_dir / "vae")


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Means and standard deviations of the scaled latents of ``images`` and of their mirror images
    (2N, 4, h, w each; mirror of image i at N + i)."""
    both = torch.cat([images, images.flip(-1)])
    dists = [vae.encode(both[i : i + 256]).latent_dist for i in range(0, len(both), 256)]
    scale = vae.config.scaling_factor
    return torch.cat([d.mean for d in dists]) * scale, torch.cat([d.std for d in dists]) * scale


def train_unet(args, run_dir: Path, train: emoji.EmojiData, vae) -> None:
    tokenizer = build_tokenizer(train.names)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length, **TEXT_CONFIG)
    )
    unet, scheduler = UNet2DConditionModel(**UNET_CONFIG), DDPMScheduler(**SCHEDULER_CONFIG)
    phase = Phase("unet", {"unet": unet, "text_encoder": text_encoder}, run_dir, args, args.unet_steps, args.lr)
    mean, std = encode_latents(vae, train.images)
    ids = tokenizer(
        train.names * 2, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    empty = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    model = text_unet_v(unet, text_encoder)

    def loss():
        idx = torch.randint(0, len(mean), (args.batch_size,))
        drop = torch.rand(args.batch_size) < PROMPT_DROPOUT
        model.ids = torch.where(drop.view(-1, 1), empty, ids[idx])
        return v_loss(model, scheduler, mean[idx] + std[idx] * torch.randn_like(std[idx]))

    def export():
        ema = phase.ema_modules()
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=ema["text_encoder"],
            tokenizer=tokenizer,
            unet=ema["unet"],
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        info = {
            "step": phase.step,
            "wall_seconds": round(phase.wall),
            "vae": json.loads((run_dir / "vae" / "training.json").read_text()),
        }
        replace_folder(
            run_dir / "pipeline",
            lambda folder: (
                pipe.save_pretrained(folder),
                (folder / "training.json").write_text(json.dumps(info) + "\n"),
            ),
        )

    if not phase.done:
        phase.run(loss, args.save_every, args.log_every, export)


def ship(run_dir: Path, out_dir: Path, train: emoji.EmojiData, test: emoji.EmojiData) -> None:
    """Write the shipped pipeline to ``out_dir``: the EMA weights of ``run_dir``/pipeline (UNet and VAE in fp16, which
    diffusers loads as fp32; the text encoder in fp32, as transformers keeps the stored dtype), the scheduler
    hiresdiff samples pixel models with (SDE-DPM-Solver++ over the training schedule), ``training.json``, and
    ``prompts.json`` (the emoji names of the training and held-out splits). A README.md already there is kept."""
    pipe = StableDiffusionPipeline.from_pretrained(Path(run_dir) / "pipeline")
    pipe.scheduler = make_scheduler(DEFAULT_SCHEDULER, DDPMScheduler(**SCHEDULER_CONFIG).config)
    pipe.unet.to(torch.float16)
    pipe.vae.to(torch.float16)
    write_shipped(pipe, run_dir, out_dir, {"train": train.names, "test": test.names})


def train(args) -> None:
    run_dir = start_run(args)
    train_split = emoji.load(32, "train", args.data)
    vae = train_vae(args, run_dir, train_split)
    train_unet(args, run_dir, train_split, vae)
    if args.ship:
        ship(run_dir, args.ship, train_split, emoji.load(32, "test", args.data))


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_run_arguments(p, "emoji-latent")
    p.add_argument("--vae-steps", type=int, default=3000, help="optimizer steps of the VAE phase")
    p.add_argument("--vae-batch-size", type=int, default=16)
    p.add_argument("--vae-lr", type=float, default=5e-4)
    p.add_argument("--unet-steps", type=int, default=7000, help="optimizer steps of the UNet + text encoder phase")
    return p


def main(argv=None) -> None:
    train(
        add_arguments(argparse.ArgumentParser(description="Train the emoji-latent pipeline (resumable).")).parse_args(
            argv
        )
    )


if __name__ == "__main__":
    main()
