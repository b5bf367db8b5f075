"""Quality of an owned text-to-image pipeline at its trained size (32²): the model cards' numbers of emoji-latent
and emoji-flux.

    python benchmarks/latent_quality.py [--model emoji-latent | emoji-flux] [--steps 20] [--guidance-scale 7.5 3 1]

1. **VAE reconstruction** of the held-out test emoji at 32², 64² and 128² (encode → decode of the mean):
   RMSE in [-1, 1] units and PSNR.
2. **Samples vs real**: one sample per held-out test emoji, its name as the prompt (names never seen in
   training), against the test images: SWD per Laplacian level (×1e3) and random-conv FD, next to the
   real-vs-real floor (train emoji vs the test set), as ``model_quality.py`` does for the pixel model.
   The bar: SWD and FD within 1.6× of the floor.
3. **Prompts matter**: for sample i and every real emoji j of the same split, d(i, j) = RMSE of their 8² block
   averages (colour and layout). The *own-prompt percentile* of sample i is the fraction of the other emoji
   farther from it than its own emoji; chance is 0.5. Reported for the held-out prompts (generalisation), for
   as many training prompts against the training images (what the model learnt), and for a shuffled pairing
   of the held-out set (a control that must give ≈ 0.5).

Writes benchmarks/results/<name>_quality.md and <name>_samples_32.png (samples per Unicode group; name: "latent"
for emoji-latent, "flux" for emoji-flux). A flow-matching pipeline samples with its own scheduler and gets its CFG
as the call arguments hiresdiff gives it (an undistilled FLUX: ``true_cfg_scale``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from hiresdiff.core.resample import downsample
from hiresdiff.data import emoji
from hiresdiff.eval import metrics
from hiresdiff.grid import save_image
from hiresdiff.loading.pipelines import load_pipeline
from hiresdiff.models import resolve_model
from hiresdiff.sampling.schedulers import make_scheduler

sys.path.insert(0, str(Path(__file__).parent))
from model_quality import group_grid, scores  # noqa: E402  (the pixel model's card uses the same numbers)

RESULTS = Path(__file__).parent / "results"


@torch.no_grad()
def reconstruction(vae, images: torch.Tensor) -> tuple[float, float]:
    """(RMSE, PSNR in dB for the [-1, 1] range) of decode(mean of encode(images))."""
    out = torch.cat(
        [
            vae.decode(vae.encode(images[i : i + 64]).latent_dist.mean).sample.clamp(-1, 1)
            for i in range(0, len(images), 64)
        ]
    )
    mse = float(((out - images) ** 2).mean())
    return mse**0.5, 10 * torch.log10(torch.tensor(4.0 / mse)).item()


def own_prompt_percentile(samples: torch.Tensor, real: torch.Tensor) -> float:
    """Mean over i of the fraction of real images j ≠ i farther (8² block-average RMSE) from sample i than real i."""
    a, b = downsample(samples, 4).flatten(1), downsample(real, 4).flatten(1)
    d = torch.cdist(a, b)
    own = d.diagonal().unsqueeze(1)
    others = ~torch.eye(len(a), dtype=torch.bool)
    return float(((d > own) & others).sum(1).float().div(len(a) - 1).mean())


def sample(pipe, settings, prompts: list[str], steps: int, guidance: float, seed: int, batch: int = 64) -> torch.Tensor:
    parts = []
    pipe_arguments = {k: v for k, v in settings.arguments(pipe, guidance).items() if k != "trained_size"}
    for i in range(0, len(prompts), batch):
        generator = torch.Generator().manual_seed(seed + i)
        out = pipe(
            prompts[i : i + batch],
            height=32,
            width=32,
            num_inference_steps=steps,
            generator=generator,
            output_type="pt",
            **pipe_arguments,
        ).images
        parts.append(out * 2 - 1)
    return torch.cat(parts)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="emoji-latent")
    p.add_argument("--data", default=None)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--scheduler", default=None, help="default: sde-dpm++, or a flow pipeline's own scheduler")
    p.add_argument("--guidance-scale", type=float, nargs="+", default=[7.5, 3.0, 1.0], help="CFG scales to measure")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    command = " ".join(["python benchmarks/latent_quality.py", *(sys.argv[1:] if argv is None else argv)])
    pipe, settings = load_pipeline(args.model, device="cpu", progress=False)
    name = "latent" if args.model == "emoji-latent" else args.model.removeprefix("emoji-")
    if args.scheduler is not None or getattr(pipe, "unet", None) is not None:
        pipe.scheduler = make_scheduler(args.scheduler or "sde-dpm++", pipe.scheduler.config)
    scheduler = type(pipe.scheduler).__name__
    test, train = emoji.load(32, "test", args.data), emoji.load(32, "train", args.data)
    n = len(test.images)
    gen = torch.Generator().manual_seed(args.seed)
    train_pick = torch.randperm(len(train.images), generator=gen)[:n]
    features = metrics.RandomConvFeatures(resolution=32, seed=0)
    floor = scores(train.images[train_pick], test.images, features)
    levels = [k for k in floor if k not in ("mean", "FD rand", "detail ×real")]

    lines = [f"# {args.model} quality at 32²\n"]
    info_path = Path(resolve_model(args.model)) / "training.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    lines.append(
        f"Made by `{command}`. Model: denoiser step {info.get('step', '?')}, VAE step "
        f"{info.get('vae', {}).get('step', '?')}; {args.steps} {scheduler} steps, seed {args.seed}.\n"
    )
    lines += [
        "## VAE reconstruction (held-out test emoji, decode of the posterior mean)\n",
        "| size | RMSE ([-1, 1]) | PSNR dB |",
        "|---|---|---|",
    ]
    for size in (32, 64, 128):
        rmse, psnr = reconstruction(pipe.vae, emoji.load(size, "test", args.data).images)
        lines.append(f"| {size}² | {rmse:.4f} | {psnr:.1f} |")
    lines += [
        f"\n## Samples vs the {n} held-out test emoji (prompt: each test emoji's own name)\n",
        "| set | CFG | SWD " + " | SWD ".join(levels) + " | FD rand | detail ×real | own-prompt percentile | s/image |",
        "|---" * (len(levels) + 6) + "|",
        "| real train vs test (floor) | — | "
        + " | ".join(f"{floor[k]:.1f}" for k in levels)
        + f" | {floor['FD rand']:.3f} | {floor['detail ×real']:.2f} | — | — |",
    ]
    ratios, first = {}, None
    for guidance in args.guidance_scale:
        start = time.time()
        samples = sample(pipe, settings, test.names, args.steps, guidance, args.seed)
        seconds = (time.time() - start) / n
        row = scores(samples, test.images, features)
        ratios[guidance] = {k: row[k] / floor[k] for k in (*levels, "FD rand")}
        lines.append(
            f"| model, held-out prompts | {guidance:g} | "
            + " | ".join(f"{row[k]:.1f}" for k in levels)
            + f" | {row['FD rand']:.3f} | {row['detail ×real']:.2f} | "
            f"{own_prompt_percentile(samples, test.images):.3f} | {seconds:.3f} |"
        )
        if first is None:
            first = samples
    default = args.guidance_scale[0]
    seen = sample(pipe, settings, [train.names[i] for i in train_pick.tolist()], args.steps, default, args.seed)
    shuffled = first[torch.randperm(n, generator=gen)]
    lines += [
        "\nOwn-prompt percentile (chance 0.5): held-out prompts in the table; "
        f"training prompts vs their training emoji at CFG {default:g}: "
        f"{own_prompt_percentile(seen, train.images[train_pick]):.3f}; "
        "control, held-out samples paired with a shuffled test set: "
        f"{own_prompt_percentile(shuffled, test.images):.3f}.\n",
        "Ratio model/floor (SWD per level and FD): "
        + "; ".join(f"CFG {g:g}: " + ", ".join(f"{k} {v:.2f}×" for k, v in r.items()) for g, r in ratios.items()),
    ]
    best = min(ratios, key=lambda g: max(ratios[g].values()))
    lines.append(
        f"\nBest CFG scale by the worst ratio: {best:g} (worst {max(ratios[best].values()):.2f}×; the bar is 1.6×)."
    )
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}_quality.md").write_text("\n".join(lines) + "\n")
    save_image(group_grid(first, test.labels, test.group_names), out / f"{name}_samples_32.png", force=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
