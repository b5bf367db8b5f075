"""Training Self-Cascade's feature upsamplers (Guo et al. 2024, §3.2, eq. 12), and the recipe for the embedded model.

    L = E_{z_t^r, z_0^{r−1}, t, c, ε} ‖ target − f_{θ, θ_Φ}(z_t^r, t, c, z_0^{r−1}) ‖²,

with the UNet θ frozen and only the upsamplers θ_Φ trained: ``images`` at the new size give z_0^r,
their block average at the previous stage's size (half the new size: stages go ×2) gives the real pivot z_0^{r−1},
t is uniform in (0, K]
(K = strength·T: the only times a later cascade stage runs), and the target is the model's own
prediction type (ε, v or x₀). Resumable: ``state_path`` holds the upsamplers, the optimizer, the
step, the losses and the random state; it is written atomically every ``save_every`` steps.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Optional

import torch
from diffusers import DDPMScheduler
from tqdm.auto import tqdm

from hiresdiff.checks import check_positive_int, check_strength
from hiresdiff.core.prediction import prediction_target
from hiresdiff.core.resample import downsample
from hiresdiff.data import emoji
from hiresdiff.denoisers.registry import trained_size
from hiresdiff.loading.pipelines import load_pipeline
from hiresdiff.loading.pixel_model import load_pixel_model
from hiresdiff.models import EMBEDDED_MODEL_DIR, is_pipeline
from hiresdiff.training.latent_model import latent_means
from hiresdiff.unet.feature_upsamplers import FeatureUpsamplers, attach_feature_upsamplers, detach_feature_upsamplers


def diffusion_loss(
    unet,
    scheduler,
    images: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    class_labels: Optional[torch.Tensor] = None,
    encoder_hidden_states: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """‖target − f(x_t, t)‖² for x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε, in the model's prediction type (mean over the batch);
    ``images`` are pixels for a pixel UNet, latents (with the prompts' ``encoder_hidden_states``) for a text one."""
    alpha_bar = scheduler.alphas_cumprod.to(images)[t].view(-1, 1, 1, 1)
    x_t = alpha_bar.sqrt() * images + (1 - alpha_bar).sqrt() * noise
    target = prediction_target(images, noise, alpha_bar, scheduler.config.prediction_type)
    # fp32: bf16 autocast made this UNet's 64² forward 70x slower on this CPU (measured)
    condition = {"encoder_hidden_states": encoder_hidden_states} if encoder_hidden_states is not None else {}
    pred = unet(x_t, t, class_labels=class_labels, **condition).sample
    return torch.nn.functional.mse_loss(pred.float(), target)


def upsampler_loss(
    unet,
    scheduler,
    upsamplers: FeatureUpsamplers,
    images: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    class_labels: Optional[torch.Tensor] = None,
    pivots: Optional[torch.Tensor] = None,
    encoder_hidden_states: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Eq. 12 for one batch: :func:`diffusion_loss` of the frozen UNet with ``upsamplers`` fed by the pivots
    z_0^{r−1} at the previous stage's size (half of ``images``'): given (a latent model's: the latents of the
    half-size images), or the block averages of ``images`` (pixels)."""
    pivot = downsample(images, 2) if pivots is None else pivots
    attach_feature_upsamplers(unet, upsamplers, pivot, stage_size=images.shape[-2:])
    try:
        return diffusion_loss(unet, scheduler, images, t, noise, class_labels, encoder_hidden_states)
    finally:
        detach_feature_upsamplers(unet)


def train_feature_upsamplers(
    unet,
    scheduler,
    images: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 16,
    lr: float = 1e-4,
    strength: float = 0.7,
    seed: int = 0,
    class_labels: Optional[torch.Tensor] = None,
    upsamplers: Optional[FeatureUpsamplers] = None,
    state_path=None,
    save_every: int = 500,
    progress: bool = True,
    pivots: Optional[torch.Tensor] = None,
    encoder_hidden_states: Optional[torch.Tensor] = None,
):
    """Train feature upsamplers for the frozen ``unet`` on ``images`` (N, C, H, W) at the new size: pixels in
    [-1, 1], or for a latent text-to-image UNet the scaled latents with their ``pivots`` (N, C, H/2, W/2: the latents
    of the half-size images) and prompt embeddings ``encoder_hidden_states`` (N, L, D).

    Returns ``(upsamplers, losses)`` (one loss per step, from the first step of the run it resumes).
    ``upsamplers`` default to zero-initialised ones (:meth:`FeatureUpsamplers.for_unet`). With ``state_path``
    an existing state is resumed (into upsamplers built with the same settings) and the state is saved every
    ``save_every`` steps and at the end. Raises ``ValueError`` before training for bad arguments.
    """
    check_positive_int(steps, "steps")
    check_strength(strength)
    if images.ndim != 4 or images.shape[1] != unet.config.in_channels or not torch.isfinite(images).all():
        raise ValueError(f"images must be finite (N, {unet.config.in_channels}, H, W); got shape {tuple(images.shape)}")
    if pivots is not None and pivots.shape != (*images.shape[:2], images.shape[2] // 2, images.shape[3] // 2):
        raise ValueError(
            f"pivots must be the previous stage's (half-size) images, shape {tuple(images.shape[:2])} + "
            f"{(images.shape[2] // 2, images.shape[3] // 2)}; got {tuple(pivots.shape)}"
        )
    if (class_labels is None) != (unet.config.num_class_embeds is None):
        raise ValueError("class_labels must be given exactly when the UNet is class-conditional")
    scale = images.shape[-1] / trained_size(unet)[1]
    if scale < 2 or not scale.is_integer():
        raise ValueError(
            f"images must be at a later cascade stage, an integer multiple >= 2 of the trained size "
            f"{trained_size(unet)}; got {tuple(images.shape[-2:])}"
        )
    upsamplers = upsamplers or FeatureUpsamplers.for_unet(unet, seed=seed, scale=int(scale))
    upsamplers.check_fits(unet)
    device = unet.device
    unet.requires_grad_(False)
    upsamplers.to(device).train().requires_grad_(True)
    optimizer = torch.optim.AdamW(upsamplers.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    step, losses, wall = 0, [], 0.0
    state_path = Path(state_path) if state_path is not None else None
    if state_path is not None and state_path.exists():
        state = torch.load(state_path, weights_only=False)
        upsamplers.load_state_dict(state["upsamplers"])
        optimizer.load_state_dict(state["optimizer"])
        step, losses, wall = state["step"], state["losses"], state["wall"]
        generator.set_state(state["generator"])
    num_train = scheduler.config.num_train_timesteps
    k = max(1, int(strength * num_train))
    bar = tqdm(total=steps, initial=step, desc="training feature upsamplers", disable=not progress)
    start = time.time()
    while step < steps:
        idx = torch.randint(0, len(images), (min(batch_size, len(images)),), generator=generator)
        t = torch.randint(1, k + 1, (len(idx),), generator=generator)  # uniform in (0, K]
        noise = torch.randn(images[idx].shape, generator=generator)  # drawn on the CPU: one seed, one run anywhere
        labels = None if class_labels is None else class_labels[idx].to(device)
        pivot = None if pivots is None else pivots[idx].to(device)
        text = None if encoder_hidden_states is None else encoder_hidden_states[idx].to(device)
        loss = upsampler_loss(
            unet, scheduler, upsamplers, images[idx].to(device), t.to(device), noise.to(device), labels, pivot, text
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if state_path is not None and (step % save_every == 0 or step == steps):
            save_state(state_path, upsamplers, optimizer, step, losses, wall + time.time() - start, generator)
    bar.close()
    upsamplers.eval().requires_grad_(False)
    return upsamplers, losses


def save_state(path: Path, upsamplers, optimizer, step: int, losses: list, wall: float, generator) -> None:
    """Write the training state atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "upsamplers": upsamplers.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "losses": losses,
            "wall": wall,
            "generator": generator.get_state(),
            "config": dict(upsamplers.config),
        },
        tmp,
    )
    os.replace(tmp, path)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--resolution", type=int, default=64, help="the stage's size: 64 (pivots 32² → 64²) or 128 (pivots 64² → 128²)"
    )
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--strength", type=float, default=0.7)
    p.add_argument("--hidden-channels", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="data-set cache (default: the one `hiresdiff data` builds)")
    p.add_argument("--run-dir", default="runs/upsamplers", help="resumable state (outside git)")
    p.add_argument("--model", default=None, help="the frozen model: the embedded pixel model (default) or emoji-latent")
    p.add_argument(
        "--out",
        default=None,
        help="save_pretrained folder (default: hiresdiff/models/emoji32_upsamplers_<res>, "
        "for emoji-latent emoji_latent_upsamplers_<res>)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    return p


@torch.no_grad()
def latent_training_set(pipe, resolution: int, data_path=None) -> dict:
    """A text-to-image pipeline's training set at the stage of ``resolution`` pixels: the scaled VAE latents (means) of
    the training emoji at that size, their pivots (the latents of the half-size emoji) and their names' prompt
    embeddings."""

    def latents(size: int) -> torch.Tensor:
        images = emoji.load(size, "train", data_path).images
        return latent_means(pipe.vae, images, batch_size=128) * pipe.vae.config.scaling_factor

    names = emoji.load(resolution, "train", data_path).names
    ids = pipe.tokenizer(
        names, padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    return {
        "images": latents(resolution),
        "pivots": latents(resolution // 2),
        "encoder_hidden_states": pipe.text_encoder(ids)[0],
    }


def train(args) -> None:
    """``hiresdiff train-upsamplers``: train on the emoji training split at ``--resolution`` and save them."""
    torch.set_num_threads(args.threads)
    if args.resolution not in (64, 128):
        raise ValueError(f"resolution must be 64 or 128; got {args.resolution}")
    latent = is_pipeline(args.model)
    if args.model is not None and not latent:
        raise ValueError(
            f"--model must be emoji-latent (or another 32² text-to-image pipeline folder); got {args.model!r}"
        )
    prefix = "emoji_latent" if latent else "emoji32"
    out = Path(args.out or EMBEDDED_MODEL_DIR.parent / f"{prefix}_upsamplers_{args.resolution}")
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to replace it or --out to write elsewhere")
    if latent:
        pipe, _ = load_pipeline(args.model, device="cpu", progress=False)
        unet, scheduler = pipe.unet, DDPMScheduler.from_config(pipe.scheduler.config)
        training_set = latent_training_set(pipe, args.resolution, args.data)
    else:
        unet, scheduler = load_pixel_model(EMBEDDED_MODEL_DIR, "ddpm")
        data = emoji.load(args.resolution, "train", args.data)
        training_set = {"images": data.images, "class_labels": data.labels}
    run_dir = Path(args.run_dir) / (f"{prefix}_{args.resolution}" if latent else str(args.resolution))
    upsamplers = FeatureUpsamplers.for_unet(
        unet,
        hidden_channels=args.hidden_channels,
        seed=args.seed,
        scale=training_set["images"].shape[-1] // trained_size(unet)[1],
    )
    start = time.time()
    upsamplers, losses = train_feature_upsamplers(
        unet,
        scheduler,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        strength=args.strength,
        seed=args.seed,
        upsamplers=upsamplers,
        state_path=run_dir / "state.pt",
        **training_set,
    )
    upsamplers.save_pretrained(out)
    (out / "training.json").write_text(
        json.dumps(
            {
                "steps": args.steps,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "strength": args.strength,
                "resolution": args.resolution,
                "parameters": sum(p.numel() for p in upsamplers.parameters()),
                "final_loss_mean_100": sum(losses[-100:]) / len(losses[-100:]),
                "wall_seconds_this_run": round(time.time() - start),
                "wall_seconds_total": round(torch.load(run_dir / "state.pt", weights_only=False)["wall"]),
                "command": "hiresdiff train-upsamplers "
                + " ".join(
                    f"--{k.replace('_', '-')} {v}"
                    for k, v in vars(args).items()
                    if k not in ("run", "command", "force") and v is not None
                ),
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {out}")
