"""Training recipe of the embedded model: a class-conditional pixel ``UNet2DModel`` on 32² emoji.

Choices (see the model card for what was measured): cosine noise schedule
(``squaredcos_cap_v2``), v-prediction, min-SNR-γ loss weighting (γ = 5, Hang et al. 2023:
weight ``min(SNR, γ) / (SNR + 1)`` for v), AdamW, EMA of the weights, bf16 autocast on CPU,
horizontal flips, class label = the emoji's Unicode group.

Resumable: the full state (model, EMA, optimizer, step, wall time) lives in ``RUN_DIR/state.pt``
outside git; the EMA weights are exported in diffusers format (fp16) with the scheduler config.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel
from tqdm.auto import tqdm

from hiresdiff.data import emoji
from hiresdiff.training.loop import (
    drop_rows_after,
    learning_rate,
    new_ema,
    replace_folder,
    save_state,
    start_run,
    v_loss,
)

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
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                        timestep_spacing="trailing")


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
    ema = new_ema(unet.parameters(), args.ema_decay)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    step, wall = 0, 0.0
    state_path = run_dir / "state.pt"
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        unet.load_state_dict(state["unet"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, wall = state["step"], state["wall"]
        torch.set_rng_state(state["rng"])
        drop_rows_after(run_dir / "loss.csv", step)
    elif args.init_from:  # e.g. the shipped weights, when the optimizer state is not on this machine


        shipped = UNet2DModel.from_pretrained(args.init_from, torch_dtype=torch.float32)
        unet.load_state_dict(shipped.state_dict())
        ema = new_ema(unet.parameters(), args.ema_decay)
        info = json.loads((Path(args.init_from) / "training.json").read_text())
        step, wall = info["step"], info["wall_seconds"]
        ema.optimization_step = step
    log = open(run_dir / "loss.csv", "a", newline="")
    writer = csv.writer(log)
    bar = tqdm(total=args.steps, initial=step, desc="training emoji32")
    running, t0 = 0.0, time.time()
    while step < args.steps:
        idx = torch.randint(0, len(data.images), (args.batch_size,))
        x0 = data.images[idx]
        flip = torch.rand(args.batch_size) < 0.5
        x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, args)
        labels = data.labels[idx]
        loss = v_loss(lambda x_t, t: unet(x_t, t, class_labels=labels).sample, scheduler, x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.step(unet.parameters())
        step += 1
        running += loss.item()
        bar.update(1)
        if step % args.log_every == 0:
            writer.writerow([step, running / args.log_every, round(wall + time.time() - t0, 1)])
            log.flush()
            bar.set_postfix(loss=f"{running / args.log_every:.4f}")
            running = 0.0
        if step % args.save_every == 0 or step == args.steps:
            wall += time.time() - t0
            t0 = time.time()
            save_state(state_path, {"unet": unet.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                                    "step": step, "wall": wall, "rng": torch.get_rng_state(), "args": vars(args)})
            ema_unet, _ = build_model_and_scheduler()
            ema.copy_to(ema_unet.parameters())
            export(ema_unet, scheduler, run_dir / "ema", step, wall)
    bar.close()
    log.close()


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--run-dir", default="runs/emoji32", help="state, loss log and exported EMA weights (outside git)")
    p.add_argument("--data", default=None, help="data-set cache (default: the one `hiresdiff data` builds)")
    p.add_argument("--steps", type=int, default=200_000, help="total optimizer steps to reach")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--decay-steps", type=int, default=0, help="fall linearly to --lr-final over the last N steps before --steps")
    p.add_argument("--lr-final", type=float, default=0.0)
    p.add_argument("--ema-decay", type=float, default=0.9999, help="upper bound of the warmed-up EMA decay")
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=100, help="steps per row of loss.csv (step, mean loss, wall seconds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-from", default=None, help="without a state in --run-dir: start from these exported weights "
                   "(with their training.json), e.g. hiresdiff/models/emoji32; the optimizer starts afresh")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads (1 is robust on a shared machine)")
    return p


def main(argv=None) -> None:
    train(add_arguments(argparse.ArgumentParser(description="Train the embedded 32² emoji model (resumable).")).parse_args(argv))


if __name__ == "__main__":
    main()
