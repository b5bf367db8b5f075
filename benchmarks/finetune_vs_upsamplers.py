"""Self-Cascade's "5× faster than full fine-tuning", measured on the embedded model at 32² → 64².

    python benchmarks/finetune_vs_upsamplers.py --budget 1500 --evals 5

Two arms train on the same 64² training emoji, batch size, t ∈ (0, K] and draws, in alternating
chunks of steps (so a busy machine slows both alike), each for ``--budget`` seconds of its own
training wall time:

* **upsamplers**: zero-initialised feature upsamplers, UNet frozen (eq. 12, as shipped: lr 5e-4);
* **full fine-tune**: every UNet weight, no upsamplers (lr 1e-4, diffusers' train_unconditional default).

At log-spaced training times both are evaluated as they are used, on the 2× Self-Cascade stage over
the same trained-size pivots (the frozen model's 32² samples): held-out loss on the test split (same
t and noise for both) and FD / SWD of the upscaled samples against the 64² test images. The ratio of
training times to equal quality is read off the curves. Writes benchmarks/results/finetune_vs_upsamplers.{json,md,png}.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from hiresdiff.data import emoji
from hiresdiff.eval import metrics
from hiresdiff.loading.pixel_model import load_pixel_model, sample
from hiresdiff.models import EMBEDDED_MODEL_DIR
from hiresdiff.recipe import Recipe
from hiresdiff.training.feature_upsamplers import diffusion_loss, upsampler_loss
from hiresdiff.unet.feature_upsamplers import FeatureUpsamplers

OUT = Path("benchmarks/results")


class Arm:
    """One way of adapting the frozen 32² model to 64²: what trains, its loss, and the recipe it samples with."""

    def __init__(self, name: str, base_unet, lr: float):
        self.name, self.wall, self.steps, self.evals = name, 0.0, 0, []
        if name == "upsamplers":
            self.unet, self.upsamplers = base_unet, FeatureUpsamplers.for_unet(base_unet)
            params = self.upsamplers.parameters()
        else:
            self.unet, self.upsamplers = copy.deepcopy(base_unet), None
            params = self.unet.parameters()
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)

    def loss(self, scheduler, x, t, noise, labels):
        if self.upsamplers is not None:
            return upsampler_loss(self.unet, scheduler, self.upsamplers, x, t, noise, labels)
        return diffusion_loss(self.unet, scheduler, x, t, noise, labels)

    def train(self, flag: bool) -> None:
        trainable = self.upsamplers if self.upsamplers is not None else self.unet
        trainable.train(flag).requires_grad_(flag)

    def recipe(self) -> Recipe:
        return Recipe.self_cascade(upsamplers=self.upsamplers)


@torch.no_grad()
def evaluate(arm: Arm, scheduler, sampler, test, pivots, labels, features, args) -> dict:
    arm.train(False)
    gen = torch.Generator().manual_seed(1234)  # the same held-out draws at every evaluation, for both arms
    k = int(args.strength * scheduler.config.num_train_timesteps)
    images, test_labels = test.images[: args.loss_images], test.labels[: args.loss_images]
    total = 0.0
    for i in range(0, len(images), args.batch_size):
        x = images[i : i + args.batch_size]
        t = torch.randint(1, k + 1, (len(x),), generator=gen)
        noise = torch.randn(x.shape, generator=gen)
        total += arm.loss(scheduler, x, t, noise, test_labels[i : i + args.batch_size]).item() * len(x)
    upscaled = torch.cat(
        [
            sample(
                arm.unet,
                sampler,
                height=64,
                width=64,
                steps=args.sample_steps,
                seed=args.seed + i,
                recipe=arm.recipe(),
                image=pivots[i : i + 8],
                class_labels=labels[i : i + 8],
                progress=False,
            )
            for i in range(0, len(pivots), 8)
        ]
    )
    swd = metrics.sliced_wasserstein(upscaled, test.images)
    row = {
        "train_seconds": round(arm.wall, 1),
        "steps": arm.steps,
        "held_out_loss": total / len(images),
        "FD rand": metrics.frechet_distance(features(upscaled), features(test.images)),
        "SWD mean": swd["mean"],
    }
    arm.evals.append(row)
    arm.train(True)
    return row


def train_chunk(arm: Arm, scheduler, data, gen: torch.Generator, args, k: int, seconds: float) -> None:
    """Train ``arm`` for ``seconds`` of wall time (whole steps), drawing batches from ``gen``."""
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        idx = torch.randint(0, len(data.images), (args.batch_size,), generator=gen)
        t = torch.randint(1, k + 1, (args.batch_size,), generator=gen)
        noise = torch.randn(data.images[idx].shape, generator=gen)
        loss = arm.loss(scheduler, data.images[idx], t, noise, data.labels[idx])
        arm.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        arm.optimizer.step()
        arm.steps += 1
    arm.wall += time.perf_counter() - start


def equal_quality_ratio(fast: list, slow: list, key: str) -> str:
    """Training time ``slow`` needs to first reach the best ``key`` of ``fast``, over ``fast``'s time to reach it."""
    best = min(fast, key=lambda r: r[key])
    reached = next((r for r in slow if r[key] <= best[key]), None)
    if reached is None:
        return (
            f"not reached by full fine-tuning within {slow[-1]['train_seconds']:.0f} s "
            f"(ratio > {slow[-1]['train_seconds'] / max(best['train_seconds'], 1):.1f}×)"
        )
    return (
        f"{reached['train_seconds'] / max(best['train_seconds'], 1):.2f}× "
        f"({reached['train_seconds']:.0f} s vs {best['train_seconds']:.0f} s)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=1500, help="training seconds per arm")
    p.add_argument(
        "--evals", type=int, default=5, help="evaluations per arm, log-spaced in training time (plus one at 0)"
    )
    p.add_argument("--chunk", type=float, default=30, help="seconds per alternating training chunk")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--strength", type=float, default=0.7)
    p.add_argument("--loss-images", type=int, default=128)
    p.add_argument("--fd-images", type=int, default=32)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(OUT / "finetune_vs_upsamplers"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    base, scheduler = load_pixel_model(EMBEDDED_MODEL_DIR, "ddpm")
    _, sampler = load_pixel_model(EMBEDDED_MODEL_DIR, "sde-dpm++")
    base.requires_grad_(False)
    train, test = emoji.load(64, "train"), emoji.load(64, "test")
    labels = test.labels[: args.fd_images]
    pivots = torch.cat(
        [
            sample(
                base,
                sampler,
                height=32,
                width=32,
                num_images=len(labels[i : i + 8]),
                seed=args.seed + i,
                steps=args.sample_steps,
                class_labels=labels[i : i + 8],
                progress=False,
            )
            for i in range(0, len(labels), 8)
        ]
    )
    features = metrics.RandomConvFeatures(resolution=64, seed=0)
    arms = [Arm("upsamplers", base, 5e-4), Arm("full fine-tune", base, 1e-4)]
    k = int(args.strength * scheduler.config.num_train_timesteps)
    gens = {a.name: torch.Generator().manual_seed(args.seed) for a in arms}  # the same batches for both arms
    marks = [args.budget * 2.0 ** (i - args.evals + 1) for i in range(args.evals)]
    for arm in arms:
        arm.train(True)
        print(arm.name, evaluate(arm, scheduler, sampler, test, pivots, labels, features, args), flush=True)
    for mark in marks:
        while any(a.wall < mark for a in arms):
            for arm in arms:
                if arm.wall < mark:
                    train_chunk(arm, scheduler, train, gens[arm.name], args, k, min(args.chunk, mark - arm.wall))
        for arm in arms:
            print(arm.name, evaluate(arm, scheduler, sampler, test, pivots, labels, features, args), flush=True)

    command = "python benchmarks/finetune_vs_upsamplers.py " + " ".join(sys.argv[1:])
    rows = {a.name: a.evals for a in arms}
    result = {
        "command": command,
        "args": vars(args),
        "rows": rows,
        "parameters": {
            "upsamplers": sum(q.numel() for q in arms[0].upsamplers.parameters()),
            "full fine-tune": sum(q.numel() for q in base.parameters()),
        },
        "seconds_per_step": {a.name: a.wall / max(a.steps, 1) for a in arms},
    }
    up, ft = rows["upsamplers"], rows["full fine-tune"]
    result["equal_quality"] = {key: equal_quality_ratio(up, ft, key) for key in ("held_out_loss", "FD rand")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    write_report(result, out)


def write_report(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        "# Feature upsamplers vs full fine-tuning (32² → 64², embedded model)\n",
        f"Made by `{result['command']}` (one process, arms alternating in chunks). "
        f"Trainable parameters: upsamplers {result['parameters']['upsamplers']:,}, full fine-tune "
        f"{result['parameters']['full fine-tune']:,}. Seconds per training step: "
        + ", ".join(f"{k} {v:.2f}" for k, v in result["seconds_per_step"].items())
        + ". "
        "Held-out loss: eq. 12 on the 64² test split (v-prediction MSE, t ∈ (0, K]); FD rand / SWD: the 2× "
        "Self-Cascade stage over the frozen model's 32² samples against the 64² test images.\n",
        "| arm | train s | steps | held-out loss | FD rand | SWD mean |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in result["rows"].items():
        lines += [
            f"| {name} | {r['train_seconds']:.0f} | {r['steps']} | {r['held_out_loss']:.5f} | {r['FD rand']:.3f} | "
            f"{r['SWD mean']:.1f} |"
            for r in rows
        ]
    lines += [
        "",
        "Training time full fine-tuning needs to reach the upsamplers' best, over the upsamplers' time to it:",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in result["equal_quality"].items()]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key in zip(axes, ("held_out_loss", "FD rand")):
        for name, rows in result["rows"].items():
            ax.plot([max(r["train_seconds"], 1) for r in rows], [r[key] for r in rows], "o-", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("training wall time (s, log)")
        ax.set_ylabel(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
