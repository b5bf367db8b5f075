"""Training recipe of ``emoji-video``: an AnimateDiff motion adapter on the frozen emoji-latent UNet.

AnimateDiff's recipe (Guo et al. 2024, §4.2): temporal transformer blocks (diffusers' ``MotionAdapter``, one after
every ResNet/attention pair of each UNet block) are inserted into the frozen text-to-image UNet
(``UNetMotionModel.from_unet2d``) and trained alone, with the image model's own diffusion loss, on video clips: here
the emoji clips with known motion (:mod:`hiresdiff.data.emoji_clips`, 8 frames at 32², prompts the emoji names, 10 %
dropped to "" so that classifier-free guidance works), encoded frame by frame by emoji-latent's frozen VAE and text
encoder, with emoji-latent's v-prediction, cosine schedule and min-SNR-5 weighting
(:func:`~hiresdiff.training.loop.v_loss`). The motion modules start at zero output (:func:`motion_unet`), so step 0
is the image model on every frame. With ``--frame-noise-share s`` the noise is PYoCo's mixed prior (Ge et al. 2023:
correlation s between frames, :func:`~hiresdiff.core.noise.frame_shared_noise`), which the frozen image UNet still
sees as standard normal on every frame; the export's ``hiresdiff.json`` names s, so that hiresdiff samples from it,
and its scheduler is the deterministic DPM-Solver++ (:mod:`hiresdiff.sampling.frame_noise`).

    hiresdiff train-motion --steps 1000 --save-every 100 --threads 1 --ship hiresdiff/models/emoji_video

``--run-dir``/export and ``--ship FOLDER`` get the ``AnimateDiffPipeline`` folder: emoji-latent's components with the
adapter (also in its own ``motion_adapter`` folder; UNet, VAE and adapter stored in fp16 as emoji-latent ships).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from diffusers import AnimateDiffPipeline, MotionAdapter, StableDiffusionPipeline, UNetMotionModel

from hiresdiff.core.noise import frame_shared_noise
from hiresdiff.data import emoji_clips
from hiresdiff.models import EMOJI_LATENT_DIR
from hiresdiff.sampling.schedulers import make_scheduler
from hiresdiff.training.latent_model import PROMPT_DROPOUT, encode_latents
from hiresdiff.training.loop import Phase, add_run_arguments, export_run, start_run, v_loss

#: The adapter's shape for emoji-latent's UNet (block widths 64, 128, 128; one layer per block).
ADAPTER_CONFIG = dict(
    block_out_channels=(64, 128, 128),
    motion_layers_per_block=1,
    motion_num_attention_heads=8,
    motion_norm_num_groups=32,
    motion_max_seq_length=32,
    use_motion_mid_block=False,
)

#: The noise correlation between frames emoji-video is trained and sampled with (PYoCo's mixed prior).
FRAME_NOISE_SHARE = 0.85


def motion_modules(unet: UNetMotionModel) -> torch.nn.ModuleDict:
    """The UNet's motion modules (shared, not copied): what the training updates and the adapter saves."""
    return torch.nn.ModuleDict(
        {name.replace(".", "_"): m for name, m in unet.named_modules() if name.endswith("motion_modules")}
    )


def motion_unet(pipe: StableDiffusionPipeline) -> UNetMotionModel:
    """emoji-latent's UNet with a fresh :data:`ADAPTER_CONFIG` adapter inserted, the image weights frozen, each
    temporal transformer's output projection zeroed (AnimateDiff's initialisation; diffusers' is random): a residual
    block that starts as the identity, so the untrained model is the image model on every frame."""
    unet = UNetMotionModel.from_unet2d(pipe.unet, MotionAdapter(**ADAPTER_CONFIG))
    unet.freeze_unet2d_params()
    for modules in motion_modules(unet).values():
        for module in modules:
            torch.nn.init.zeros_(module.proj_out.weight)
            torch.nn.init.zeros_(module.proj_out.bias)
    return unet


def shipped_motion_modules(pipe: StableDiffusionPipeline, folder: Path) -> dict:
    """The motion modules' weights (:func:`motion_modules` keys, float32) of an exported ``folder``'s adapter."""
    adapter = MotionAdapter.from_pretrained(folder / "motion_adapter", torch_dtype=torch.float32)
    return motion_modules(UNetMotionModel.from_unet2d(pipe.unet, adapter)).state_dict()


def clip_loss(
    unet, scheduler, latents: torch.Tensor, embeddings: torch.Tensor, generator=None, share: float = 0.0
) -> torch.Tensor:
    """``v_loss`` of the motion UNet on clip latents (B, F, C, h, w) with their prompt embeddings (B, L, D), the
    noise shared across frames with correlation ``share`` (:func:`~hiresdiff.core.noise.frame_shared_noise`)."""
    per_frame = embeddings.repeat_interleave(latents.shape[1], dim=0)  # the UNet takes one per frame, as its pipeline

    def model(x_t, t):
        return unet(x_t, t, encoder_hidden_states=per_frame).sample

    def prior(noise):
        return frame_shared_noise(noise, share, frame_dim=2)

    # the UNet takes (B, C, F, h, w); in float32: bf16 autocast runs the motion UNet 13x slower on this CPU
    return v_loss(model, scheduler, latents.transpose(1, 2), generator, autocast=False, prior=prior)


def train(args) -> None:
    run_dir = start_run(args)
    pipe = StableDiffusionPipeline.from_pretrained(args.base, torch_dtype=torch.float32)
    unet = motion_unet(pipe)
    phase = Phase("motion", {"motion": motion_modules(unet)}, run_dir, args, args.steps, args.lr)
    if not phase.resumed and args.init_from:  # e.g. the shipped adapter, when the run's state is not on this machine
        phase.start_from({"motion": shipped_motion_modules(pipe, Path(args.init_from))}, args.init_from)
    clips = emoji_clips.load(32, "train", args.data)
    with torch.no_grad():
        frames = clips.frames.flatten(0, 1)
        mean, std = encode_latents(pipe.vae, frames)  # every frame, then every frame flipped
        mean, std = (v.view(2 * len(clips.prompts), emoji_clips.FRAMES, *v.shape[1:]) for v in (mean, std))
        ids = pipe.tokenizer(clips.prompts * 2, padding="max_length", truncation=True, return_tensors="pt").input_ids
        embeddings = torch.cat([pipe.text_encoder(ids[i : i + 256])[0] for i in range(0, len(ids), 256)])
        empty = pipe.text_encoder(pipe.tokenizer([""], padding="max_length", return_tensors="pt").input_ids)[0]

    def loss() -> torch.Tensor:
        idx = torch.randint(0, len(mean), (args.batch_size,))
        drop = (torch.rand(args.batch_size) < PROMPT_DROPOUT).view(-1, 1, 1)
        latents = mean[idx] + std[idx] * torch.randn_like(std[idx])
        return clip_loss(
            unet, pipe.scheduler, latents, torch.where(drop, empty, embeddings[idx]), share=args.frame_noise_share
        )

    def export() -> None:
        exported = copy.deepcopy(unet)
        motion_modules(exported).load_state_dict(phase.ema_modules()["motion"].state_dict())
        adapter = MotionAdapter(**ADAPTER_CONFIG)
        adapter.load_state_dict({k: v for k, v in exported.state_dict().items() if "motion_modules" in k})

        def save(folder: Path) -> None:
            video = AnimateDiffPipeline.from_pipe(copy.deepcopy(pipe), motion_adapter=adapter)
            if args.frame_noise_share:  # an SDE's per-step noise would be independent between frames
                video.scheduler = make_scheduler("dpm++", pipe.scheduler.config)
            for module in (video.unet, video.vae, video.motion_adapter):
                module.to(torch.float16)  # as emoji-latent ships (diffusers loads it as fp32)
            video.save_pretrained(folder)
            if args.frame_noise_share:  # sampled from the prior it was trained on (hiresdiff.sampling.frame_noise)
                settings = {"call": {"frame_noise_share": args.frame_noise_share}}
                (folder / "hiresdiff.json").write_text(json.dumps(settings, indent=2) + "\n")

        info = {
            "base": "emoji-latent",
            "clips": f"{len(clips.prompts)} training clips of {emoji_clips.FRAMES} frames at 32²",
            "command": f"hiresdiff train-motion --steps {args.steps} --batch-size {args.batch_size} --lr {args.lr} "
            f"--seed {args.seed} --frame-noise-share {args.frame_noise_share:g}",
            "frame_noise_share": args.frame_noise_share,
        }
        export_run(args, run_dir, phase, save, info)

    phase.run(loss, args.save_every, args.log_every, export)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_run_arguments(p, "emoji-video")
    p.set_defaults(lr=1e-4, batch_size=8, warmup=100)
    p.add_argument("--base", default=str(EMOJI_LATENT_DIR), help="the image pipeline folder the adapter moves")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    p.add_argument(
        "--frame-noise-share",
        type=float,
        default=FRAME_NOISE_SHARE,
        help="correlation of the training noise between frames (PYoCo's mixed prior; 0: independent)",
    )
    p.add_argument(
        "--init-from",
        default=None,
        help="without a state in --run-dir: start from this exported folder's adapter (with its training.json), "
        "e.g. hiresdiff/models/emoji_video; the optimizer starts afresh",
    )
    return p
