"""What every training recipe of the owned models shares: the v-loss, the EMA, the learning-rate schedule,
resumable state files and atomic export folders.

The loss is the min-SNR-γ weighted v-prediction loss (Hang et al. 2023): for
x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε the target is v = √ᾱ_t ε − √(1−ᾱ_t) x₀ and the weight is
min(SNR_t, γ) / (SNR_t + 1) with SNR_t = ᾱ_t / (1 − ᾱ_t).
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import Callable

import torch

MIN_SNR_GAMMA = 5.0


def v_loss(model: Callable, scheduler, x0: torch.Tensor, generator=None, autocast: bool = True) -> torch.Tensor:
    """Min-SNR-weighted v-loss of ``model(x_t, t) -> v`` on one batch ``x0`` (any shape (B, …))."""
    b = x0.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    a = scheduler.alphas_cumprod[t].view(b, *[1] * (x0.ndim - 1))
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    v = a.sqrt() * noise - (1 - a).sqrt() * x0
    snr = a / (1 - a)
    weight = torch.clamp(snr, max=MIN_SNR_GAMMA) / (snr + 1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        pred = model(x_t, t)
    return (weight * (pred.float() - v) ** 2).mean()


def new_ema(parameters, decay: float):
    """EMA of ``parameters``, decay warming up as 1 - (1 + step)^-0.75 towards ``decay``."""
    from diffusers.training_utils import EMAModel

    return EMAModel(parameters, decay=decay, use_ema_warmup=True, inv_gamma=1.0, power=0.75)


def learning_rate(step: int, args) -> float:
    """Linear warm-up over ``args.warmup`` steps, then ``args.lr``; over the last ``args.decay_steps`` steps
    before ``args.steps`` it falls linearly to ``args.lr_final`` (a function of the step alone, so resumable)."""
    lr = args.lr * min(1.0, (step + 1) / args.warmup)
    decay_start = args.steps - args.decay_steps
    if args.decay_steps > 0 and step >= decay_start:
        lr = args.lr + (args.lr_final - args.lr) * (step - decay_start + 1) / args.decay_steps
    return lr


def drop_rows_after(log_path: Path, step: int) -> None:
    """Remove loss-log rows past ``step`` (logged by an interrupted run after its last saved state)."""
    if log_path.exists():
        rows = [row for row in csv.reader(log_path.read_text().splitlines()) if row and int(row[0]) <= step]
        tmp = log_path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(rows)
        os.replace(tmp, log_path)


def start_run(args) -> Path:
    """Seed torch with ``args.seed``, use ``args.threads`` CPU threads, and create ``args.run_dir``; return it."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def save_state(path: Path, state: dict) -> None:
    """``torch.save`` through a temporary file, so an interrupted save keeps the previous state."""
    tmp = Path(path).with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def replace_folder(out_dir: Path, write: Callable[[Path], None]) -> None:
    """Let ``write(folder)`` fill a temporary folder, then swap it in for ``out_dir`` (never half-written)."""
    out_dir = Path(out_dir)
    tmp, old = out_dir.with_name(out_dir.name + ".tmp"), out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
