"""emoji-video's quality at its trained 32²: per-frame distribution distances and temporal statistics against the
held-out real clips, next to the real floor.

    python benchmarks/video_quality.py [--model hiresdiff/models/emoji_video] [--clips 64] [--steps 20]

Samples one 8-frame clip per held-out test clip (its prompt, seeds from ``--seed``) with the model's pipeline
(``AnimateDiffPipeline``, its own scheduler or ``--scheduler``, guidance ``--guidance``, default 7.5, the noise shared
between frames as its ``hiresdiff.json`` says or ``--frame-noise-share``), then reports,
on every frame, the sliced Wasserstein distance (Laplacian levels 32/16/8, ×1e3) and the random-conv Fréchet
distance to the test clips' frames, and per clip the temporal statistics of :mod:`hiresdiff.eval.metrics.temporal`
(frame-difference energy, block-matched warping error, flicker), means over clips; the floor is as many real train
clips scored the same way. The model card's bar: every per-frame distance within 1.6× of the floor and every
temporal statistic within 1.6× of the real clips' (either way). Writes ``benchmarks/results/video_quality.md`` and a
strip of sample clips (rows: clips, columns: frames), ``video_samples_32.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
BAR = 1.6
TEMPORAL = ("frame difference", "warping error", "flicker")


def frame_scores(clips: torch.Tensor, real: torch.Tensor, features) -> dict:
    """Per-frame SWD levels and FD of clips (N, F, 3, H, W) against the real clips' frames."""
    from hiresdiff.eval import metrics

    frames, real_frames = clips.flatten(0, 1), real.flatten(0, 1)
    out = metrics.sliced_wasserstein(frames, real_frames, levels=3)
    out.pop("mean", None)
    out["FD rand"] = metrics.frechet_distance(features(frames), features(real_frames))
    return out


def temporal_scores(clips: torch.Tensor) -> dict:
    from hiresdiff.eval import metrics

    values = (metrics.frame_difference_energy(clips), metrics.warping_error(clips), metrics.flicker(clips))
    return {name: float(v.mean()) for name, v in zip(TEMPORAL, values)}


def sample_clips(
    pipe, prompts: list[str], steps: int, seed: int, size: int = 32, batch: int = 8, arguments=None, recipe=None
) -> torch.Tensor:
    """One clip per prompt at ``size``² (N, 8, 3, size, size) in [-1, 1] made with ``recipe``, ``batch`` at a time
    (each batch's seed ``seed`` + its first index), with the model's ``arguments`` of ``hiresdiff.generate``
    (:meth:`hiresdiff.models.ModelSettings.arguments`: its guidance and frame-noise share)."""
    import hiresdiff
    from hiresdiff.data.emoji_clips import FRAMES

    clips = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        stages = hiresdiff.generate(
            pipe,
            chunk,
            height=size,
            width=size,
            recipe=recipe,
            num_frames=FRAMES,
            steps=steps,
            seed=seed + start,
            output_type="pt",
            return_stages=True,
            **(arguments or {}),
        )
        clips.append(stages[-1] * 2 - 1)
    return torch.cat(clips)


def strip(clips: torch.Tensor, cell: int = 64):
    """Rows of clips, columns of frames, enlarged (nearest) to ``cell``²."""
    from hiresdiff.grid import labelled_grid
    from hiresdiff.loading.pixel_model import to_pil

    frames = clips.shape[1]
    columns = [to_pil(clips[:, k]) for k in range(frames)]
    return labelled_grid(columns, [f"frame {k}" for k in range(frames)], cell)


def main(argv=None) -> None:
    from diffusers import DiffusionPipeline

    from hiresdiff.data import emoji_clips
    from hiresdiff.eval import metrics
    from hiresdiff.grid import save_image
    from hiresdiff.models import MODEL_NAMES, model_settings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="emoji-video")
    p.add_argument("--data", default=None)
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale")
    p.add_argument("--frame-noise-share", type=float, default=None, help="default: the model's (its hiresdiff.json)")
    p.add_argument(
        "--scheduler", default=None, help="a scheduler name (hiresdiff generate --scheduler); default the model's"
    )
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    command = " ".join(["python benchmarks/video_quality.py", *(sys.argv[1:] if argv is None else argv)])
    folder = Path(MODEL_NAMES.get(args.model, args.model))
    pipe = DiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if args.scheduler is not None:
        from hiresdiff.sampling.schedulers import make_scheduler

        pipe.scheduler = make_scheduler(args.scheduler, pipe.scheduler.config)
    scheduler = args.scheduler or type(pipe.scheduler).__name__
    test, train = emoji_clips.load(32, "test", args.data), emoji_clips.load(32, "train", args.data)
    gen = torch.Generator().manual_seed(args.seed)
    chosen = torch.randperm(len(test.prompts), generator=gen)[: args.clips]
    real_train = train.frames[torch.randperm(len(train.prompts), generator=gen)[: len(chosen)]]
    start = time.time()
    arguments = model_settings(str(folder)).arguments(pipe, args.guidance)
    if args.frame_noise_share is not None:
        arguments["frame_noise_share"] = args.frame_noise_share
    share = arguments.get("frame_noise_share", 0)
    samples = sample_clips(pipe, [test.prompts[i] for i in chosen], args.steps, args.seed, arguments=arguments)
    seconds = time.time() - start
    features = metrics.RandomConvFeatures(resolution=32, seed=0)
    floor = {**frame_scores(real_train, test.frames, features), **temporal_scores(real_train)}
    model = {**frame_scores(samples, test.frames, features), **temporal_scores(samples)}
    real_temporal = temporal_scores(test.frames)
    info_path = folder / "training.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    distances = [k for k in model if k not in TEMPORAL]
    lines = [
        "# emoji-video quality at 32²\n",
        f"Made by `{command}`: {len(chosen)} clips of 8 frames ({args.steps} steps of {scheduler}, "
        f"guidance {args.guidance:g}, noise shared between frames {share:g}, "
        f"{seconds / len(chosen):.2f} s/clip on one core) vs the {len(test.prompts)} held-out test clips; floor = "
        f"{len(chosen)} real train clips vs the same test clips. Model: training step {info.get('step', '?')}, "
        f"{info.get('wall_seconds', 0) / 3600:.1f} h of training. Per-frame distances: SWD levels ×1e3 and the "
        "random-conv FD over every frame; temporal: means over clips (frame difference: mean squared change between "
        "consecutive frames; warping error: mean absolute change left after block-matched motion; flicker: mean "
        "brightness change).\n",
        "| set | SWD " + " | SWD ".join(distances[:-1]) + " | FD rand | " + " | ".join(TEMPORAL) + " |",
        "|---" * (len(distances) + len(TEMPORAL) + 1) + "|",
    ]
    rows = (("real train (floor)", floor), ("real test", {**{k: float("nan") for k in distances}, **real_temporal}))
    for label, row in (*rows, ("emoji-video", model)):
        cells = [f"{row[k]:.1f}" if k != "FD rand" else f"{row[k]:.3f}" for k in distances]
        lines.append(f"| {label} | " + " | ".join(cells + [f"{row[k]:.4f}" for k in TEMPORAL]) + " |")
    ratios = {k: model[k] / floor[k] for k in distances}
    ratios.update({k: model[k] / real_temporal[k] for k in TEMPORAL})
    met = all(v <= BAR for k, v in ratios.items() if k in distances) and all(
        1 / BAR <= v <= BAR for k, v in ratios.items() if k in TEMPORAL
    )
    lines.append(
        "\nRatios (distances: model/floor; temporal: model/real test): "
        + ", ".join(f"{k}: {v:.2f}×" for k, v in ratios.items())
        + (f" — meets the {BAR}× bar." if met else f" — does not meet the {BAR}× bar.")
    )
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = (
        "video_quality"
        + (f"_{args.scheduler}" if args.scheduler else "")
        + (f"_cfg{args.guidance:g}" if args.guidance != 7.5 else "")
        + (f"_share{share:g}" if args.frame_noise_share is not None else "")
    )
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (out / f"{stem}.json").write_text(
        json.dumps({"command": command, "floor": floor, "real": real_temporal, "model": model, "met": met}, indent=1)
    )
    save_image(strip(samples[:8]), out / f"{stem.replace('quality', 'samples')}_32.png", force=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
