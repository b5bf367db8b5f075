"""What every training recipe of the owned models shares: the v-loss, the EMA, the learning-rate schedule,
resumable state files and atomic export folders.

The loss is the min-SNR-γ weighted v-prediction loss (Hang et al. 2023): for
x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε the target is v = √ᾱ_t ε − √(1−ᾱ_t) x₀ and the weight is
min(SNR_t, γ) / (SNR_t + 1) with SNR_t = ᾱ_t / (1 − ᾱ_t). Flow-matching models (``emoji-flux``) use the
rectified-flow loss instead (:func:`flow_loss`).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

MIN_SNR_GAMMA = 5.0


def v_loss(
    model: Callable, scheduler, x0: torch.Tensor, generator=None, autocast: bool = True, prior: Callable = None
) -> torch.Tensor:
    """Min-SNR-weighted v-loss of ``model(x_t, t) -> v`` on one batch ``x0`` (any shape (B, …)); ``prior`` maps the
    standard normal draw to the noise the model is trained on (e.g. a clip's frame-shared noise)."""
    b = x0.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    if prior is not None:
        noise = prior(noise)
    a = scheduler.alphas_cumprod[t].view(b, *[1] * (x0.ndim - 1))
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    v = a.sqrt() * noise - (1 - a).sqrt() * x0
    snr = a / (1 - a)
    weight = torch.clamp(snr, max=MIN_SNR_GAMMA) / (snr + 1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        pred = model(x_t, t)
    return (weight * (pred.float() - v) ** 2).mean()


def flow_loss(model: Callable, x0: torch.Tensor, generator=None, autocast: bool = True) -> torch.Tensor:
    """Rectified-flow loss of ``model(x_t, t) -> v`` on one batch ``x0``: x_t = (1 − t)·x₀ + t·ε, target v = ε − x₀,
    t = sigmoid(n) with n standard normal (logit-normal, SD3's training density; Esser et al. 2024, eq. 19)."""
    b = x0.shape[0]
    t = torch.sigmoid(torch.randn(b, generator=generator))
    noise = torch.randn(x0.shape, generator=generator)
    s = t.view(b, *[1] * (x0.ndim - 1))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        pred = model((1 - s) * x0 + s * noise, t)
    return ((pred.float() - (noise - x0)) ** 2).mean()


def new_ema(parameters, decay: float):
    """EMA of ``parameters``, decay warming up as 1 - (1 + step)^-0.75 towards ``decay``."""
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


class Phase:
    """One resumable training phase: the model's parameters, their EMA and optimizer, the step and wall time, saved
    atomically to ``state_path`` with a loss log beside it; every owned model trains through it.

    ``schedule`` (lr, warmup, steps, decay_steps, lr_final: :func:`learning_rate`) defaults to a warm-up over
    ``args.warmup`` steps and a fall to a tenth over the last quarter; ``files`` names the state and the loss log
    (default ``NAME_state.pt``, ``NAME_loss.csv``)."""

    def __init__(
        self,
        name: str,
        modules: dict,
        run_dir: Path,
        args,
        steps: int,
        lr: float,
        schedule: argparse.Namespace | None = None,
        files: tuple[str, str] | None = None,
    ):
        self.name, self.modules, self.steps, self.ema_decay = name, modules, steps, args.ema_decay
        self.params = [p for m in modules.values() for p in m.parameters()]
        self.ema = new_ema(self.params, args.ema_decay)
        self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=0.0)
        self.schedule = schedule or argparse.Namespace(
            lr=lr, warmup=args.warmup, steps=steps, decay_steps=steps // 4, lr_final=lr / 10
        )
        state_file, log_file = files or (f"{name}_state.pt", f"{name}_loss.csv")
        self.state_path, self.log_path = run_dir / state_file, run_dir / log_file
        self.step, self.wall = 0, 0.0
        self.resumed = self.state_path.exists()
        if self.resumed:
            state = torch.load(self.state_path, weights_only=False)
            for key, module in modules.items():
                module.load_state_dict(state[key])
            self.ema.load_state_dict(state["ema"])
            self.opt.load_state_dict(state["opt"])
            self.step, self.wall = state["step"], state["wall"]
            torch.set_rng_state(state["rng"])
            drop_rows_after(self.log_path, self.step)

    def start_from(self, weights: dict, folder: Path) -> None:
        """Start a new run from exported ``weights`` (module key → state dict) read from ``folder``, whose
        ``training.json`` gives the steps and wall seconds they trained, when their optimizer state is not at hand:
        the EMA starts from them, the optimizer afresh."""
        info = json.loads((Path(folder) / "training.json").read_text())
        for key, module in self.modules.items():
            module.load_state_dict(weights[key])
        self.ema = new_ema(self.params, self.ema_decay)
        self.ema.optimization_step = info["step"]
        self.step, self.wall = info["step"], info["wall_seconds"]

    @property
    def done(self) -> bool:
        return self.step >= self.steps

    def run(self, loss_fn, save_every: int, log_every: int, on_save) -> None:
        """Optimise ``loss_fn()`` until ``steps``; every ``save_every`` steps save the state and call ``on_save()``
        (with the RNG's state restored after it, so that a resumed run draws what an uninterrupted one does)."""
        with open(self.log_path, "a", newline="") as log:
            writer, running, t0 = csv.writer(log), 0.0, time.time()
            for _ in tqdm(
                range(self.step, self.steps), initial=self.step, total=self.steps, desc=f"training {self.name}"
            ):
                for group in self.opt.param_groups:
                    group["lr"] = learning_rate(self.step, self.schedule)
                loss = loss_fn()
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.params, 1.0)
                self.opt.step()
                self.ema.step(self.params)
                self.step += 1
                running += loss.item()
                if self.step % log_every == 0:
                    writer.writerow([self.step, running / log_every, round(self.wall + time.time() - t0, 1)])
                    log.flush()
                    running = 0.0
                if self.step % save_every == 0 or self.step == self.steps:
                    self.wall += time.time() - t0
                    t0 = time.time()
                    save_state(
                        self.state_path,
                        {
                            **{k: m.state_dict() for k, m in self.modules.items()},
                            "ema": self.ema.state_dict(),
                            "opt": self.opt.state_dict(),
                            "step": self.step,
                            "wall": self.wall,
                            "rng": torch.get_rng_state(),
                        },
                    )
                    with torch.random.fork_rng():  # an export that draws (a module's init) leaves the run's RNG
                        on_save()

    def ema_modules(self) -> dict:
        """Deep copies of the modules holding the EMA weights."""
        copies = {k: copy.deepcopy(m) for k, m in self.modules.items()}
        self.ema.copy_to([p for m in copies.values() for p in m.parameters()])
        return copies


def write_shipped(pipe, run_dir: Path, out_dir: Path, names: dict, extra: dict | None = None) -> None:
    """Replace ``out_dir`` by ``pipe.save_pretrained``, the run's ``training.json``, ``prompts.json`` (``names``: the
    emoji names of the training and held-out splits) and ``extra`` files (name: text); a README.md (the model card)
    already in ``out_dir`` is kept."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    card = (out_dir / "README.md").read_text() if (out_dir / "README.md").exists() else None
    files = {
        "prompts.json": json.dumps({k: sorted(set(v)) for k, v in names.items()}, indent=0, ensure_ascii=False) + "\n",
        **(extra or {}),
        **({"README.md": card} if card is not None else {}),
    }

    def write(folder: Path) -> None:
        pipe.save_pretrained(folder)
        shutil.copy(run_dir / "pipeline" / "training.json", folder / "training.json")
        for name, text in files.items():
            (folder / name).write_text(text)

    replace_folder(out_dir, write)


def export_run(args, run_dir: Path, phase: Phase, save: Callable[[Path], None], info: dict) -> None:
    """Write ``save(folder)``, ``training.json`` (the phase's step and wall time, then ``info``) and the shipped
    folder's model card into ``run_dir``/export, and into ``args.ship`` once the phase is done, each folder swapped in
    whole (:func:`replace_folder`)."""
    card = Path(args.ship) / "README.md" if args.ship else None

    def write(folder: Path) -> None:
        save(folder)
        summary = {"step": phase.step, "wall_seconds": round(phase.wall), **info}
        (folder / "training.json").write_text(json.dumps(summary, indent=1) + "\n")
        if card is not None and card.exists():
            (folder / "README.md").write_text(card.read_text())

    replace_folder(run_dir / "export", write)
    if args.ship and phase.done:
        replace_folder(Path(args.ship), write)


def add_run_arguments(p: argparse.ArgumentParser, name: str) -> None:
    """The options every recipe on :class:`Phase` shares (run folder, data, schedule, batch, EMA, logging, threads,
    shipping) for the owned model ``name`` (emoji-latent, emoji-flux, emoji_subgroups)."""
    p.add_argument("--run-dir", default=f"runs/{name}", help="states, loss logs and exported weights (outside git)")
    p.add_argument("--data", default=None, help="data-set cache (default: the one `hiresdiff data` builds)")
    p.add_argument(
        "--lr",
        type=float,
        default=3e-4,
        help="peak learning rate of the denoiser (linear warm-up, then a "
        "linear fall to a tenth over the last quarter of the steps)",
    )
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--ema-decay", type=float, default=0.999, help="upper bound of the warmed-up EMA decay")
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=50, help="steps per row of the loss logs (step, mean loss, wall s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    p.add_argument(
        "--ship",
        default=None,
        metavar="FOLDER",
        help="when training is done, write the shipped pipeline "
        f"there (e.g. hiresdiff/models/{name.replace('-', '_')})",
    )
