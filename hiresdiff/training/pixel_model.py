"""Training recipe of the embedded model: a class-conditional pixel ``UNet2DModel`` on 32² emoji.

Choices (see the model card for what was measured): cosine noise schedule
(``squaredcos_cap_v2``), v-prediction, min-SNR-γ loss weighting (γ = 5, Hang et al. 2023:
weight ``min(SNR, γ) / (SNR + 1)`` for v), AdamW, EMA of the weights, bf16 autocast on CPU,
horizontal flips, class label = the emoji's Unicode group.

Resumable through the shared loop (:class:`hiresdiff.training.loop.Phase`): the full state (model, EMA, optimizer,
step, wall time) lives in ``RUN_DIR/state.pt`` outside git; the EMA weights are exported in diffusers format (fp16)
with the scheduler config.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel

from hiresdiff.data import emoji
from hiresdiff.training.loop import Phase, replace_folder, start_run, v_loss

UNET_CONFIG = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(64, 128, 128),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    num_class_embeds=9,
)
# "trailing" spacing makes few-step samplers start at t = T-1, where the cosine schedule is pure noise
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    prediction_type="v_prediction",
    timestep_spacing="trailing",
)


def build_model_and_scheduler():
    return UNet2DModel(**UNET_CONFIG), DDPMScheduler(**SCHEDULER_CONFIG)


def export(ema_unet, scheduler, out_dir: Path, step: int, wall: float) -> None:
    """Write the EMA weights (fp16 safetensors), the scheduler config and ``training.json`` atomically."""

    def write(folder: Path) -> None:
        copy.deepcopy(ema_unet).to(torch.float16).save_pretrained(folder)
        scheduler.save_pretrained(folder)
        (folder / "training.json").write_text(json.dumps({"step": step, "wall_seconds": round(wall)}) + "\n")

    replace_folder(out_dir, write)


def train(args) -> None:
    run_dir = start_run(args)
    data = emoji.load(32, "train", args.data)
    unet, scheduler = build_model_and_scheduler()
    schedule = argparse.Namespace(
        lr=args.lr, warmup=args.warmup, steps=args.steps, decay_steps=args.decay_steps, lr_final=args.lr_final
    )
    phase = Phase("emoji32", {"unet": unet}, run_dir, args, args.steps, args.lr, schedule, ("state.pt", "loss.csv"))
    if (
        not phase.resumed and args.init_from
    ):  # e.g. the shipped weights, when the optimizer state is not on this machine
        shipped = UNet2DModel.from_pretrained(args.init_from, dtype=torch.float32)
        phase.start_from({"unet": shipped.state_dict()}, args.init_from)

    def loss() -> torch.Tensor:
        idx = torch.randint(0, len(data.images), (args.batch_size,))
        x0 = data.images[idx]
        flip = torch.rand(args.batch_size) < 0.5
        x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
        labels = data.labels[idx]
        return v_loss(lambda x_t, t: unet(x_t, t, class_labels=labels).sample, scheduler, x0)

    def on_save() -> None:
        export(phase.ema_modules()["unet"], scheduler, run_dir / "ema", phase.step, phase.wall)

    phase.run(loss, args.save_every, args.log_every, on_save)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--run-dir", default="runs/emoji32", help="state, loss log and exported EMA weights (outside git)")
    p.add_argument("--data", default=None, help="data-set cache (default: the one `hiresdiff data` builds)")
    p.add_argument("--steps", type=int, default=200_000, help="total optimizer steps to reach")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument(
        "--decay-steps", type=int, default=0, help="fall linearly to --lr-final over the last N steps before --steps"
    )
    p.add_argument("--lr-final", type=float, default=0.0)
    p.add_argument("--ema-decay", type=float, default=0.9999, help="upper bound of the warmed-up EMA decay")
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument(
        "--log-every", type=int, default=100, help="steps per row of loss.csv (step, mean loss, wall seconds)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--init-from",
        default=None,
        help="without a state in --run-dir: start from these exported weights "
        "(with their training.json), e.g. hiresdiff/models/emoji32; the optimizer starts afresh",
    )
    p.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="CPU threads (1 is robust on a shared machine)"
    )
    return p


def main(argv=None) -> None:
    train(
        add_arguments(
            argparse.ArgumentParser(description="Train the embedded 32² emoji model (resumable).")
        ).parse_args(argv)
    )


if __name__ == "__main__":
    main()
