"""Every method on emoji-video's clips at 2× and 4× its trained 32²: per frame against the real clips at that size,
over time, against the clip the same seed makes at 32², and what it costs.

    python benchmarks/video_methods.py --scale 2 [--clips 4] [--steps 10] [--real 64]

Samples ``--clips`` held-out prompts (the test clips' emoji names) at 32·scale with every method through
``hiresdiff.generate`` (the same seeds, one batch per method, ``--steps`` steps of the pipeline's scheduler, the
model's guidance and frame-noise share from its ``hiresdiff.json``) and the trained-size clips of the same seeds.
Per method: the per-frame SWD (×1e3, mean of its Laplacian levels)
and random-conv FD against the frames of ``--real`` real test clips rendered at that size (the exact ground truth:
the clip builder draws every size from the same 128² emoji); the semantic agreement of each frame with the same
frame of the 32² clip (the shipped emoji classifier); the temporal statistics of
:mod:`hiresdiff.eval.metrics.temporal` (block-matched warping error, flicker, frame-difference energy; the real
clips' next to them); the median paired RMSE to the 32² clip (the enlarged clip downsampled, frame by frame); and
the wall time per clip on one core. FreeScale runs twice: with the video default, φ on latents, and with
``space="rgb"`` (decode → resize → encode, its image choice). Writes ``benchmarks/results/video_methods/`` per scale:
``video_methods_{S}x.md`` and ``.json``, a contact sheet ``video_methods_{S}x.png`` (columns: a real test clip for
scale, then each method's first clip; rows: its frames), and the methods side by side as a GIF.
Few clips (sampling a clip at 128² takes minutes here): the distances are coarse, the comparisons paired.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "video_methods"


def methods() -> dict:
    from hiresdiff.recipe import Recipe

    return {
        "naive": Recipe.naive(),
        "UG": Recipe.preset("ug"),
        "Self-Cascade": Recipe.preset("self-cascade"),
        "FreeScale (latent φ)": Recipe.freescale(),
        "FreeScale (RGB φ)": Recipe.freescale(space="rgb"),
        "FreeScale+UG": Recipe.preset("freescale+ug"),
        "fast": Recipe.preset("fast"),
    }


def scores(clips, low, real, features, classifier) -> dict:
    from hiresdiff.eval import metrics

    frames, low_frames = clips.flatten(0, 1), low.flatten(0, 1)
    swd = metrics.sliced_wasserstein(frames, real.flatten(0, 1), levels=3)
    return {
        "SWD": swd["mean"],
        "FD rand": metrics.frechet_distance(features(frames), features(real.flatten(0, 1))),
        "semantic": metrics.semantic_agreement(frames, low_frames, classifier),
        "warping error": float(metrics.warping_error(clips).mean()),
        "flicker": float(metrics.flicker(clips).mean()),
        "frame difference": float(metrics.frame_difference_energy(clips).mean()),
        "RMSE to 32²": metrics.median_paired_rmse(frames, low_frames),
    }


def main(argv=None) -> None:
    from diffusers import DiffusionPipeline
    from video_quality import sample_clips

    from hiresdiff.data import emoji_clips
    from hiresdiff.eval import metrics
    from hiresdiff.eval.metrics.semantic import shipped_classifier
    from hiresdiff.grid import labelled_grid, save_image, save_video
    from hiresdiff.loading.pixel_model import to_pil
    from hiresdiff.models import EMOJI_VIDEO_DIR, model_settings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=int, choices=(2, 4), required=True)
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--real", type=int, default=64, help="real test clips the per-frame distances compare with")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None)
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    command = " ".join(["python benchmarks/video_methods.py", *(sys.argv[1:] if argv is None else argv)])
    torch.set_num_threads(1)
    size = 32 * args.scale
    pipe = DiffusionPipeline.from_pretrained(EMOJI_VIDEO_DIR, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    test = emoji_clips.load(32, "test", args.data)
    order = torch.randperm(len(test.prompts), generator=torch.Generator().manual_seed(args.seed))
    prompts = [test.prompts[i] for i in order[: args.clips]]
    real = emoji_clips.load(size, "test", args.data)
    real_clips = real.frames[order[: args.real]].float()
    features = metrics.RandomConvFeatures(resolution=size, seed=0)
    classifier = shipped_classifier()
    arguments = model_settings(str(EMOJI_VIDEO_DIR)).arguments(pipe)  # its guidance and frame-noise share
    low = sample_clips(pipe, prompts, args.steps, args.seed, batch=len(prompts), arguments=arguments)
    rows, sheets, seconds = {}, {"real test clip": real_clips[0]}, {}
    for name, recipe in methods().items():
        start = time.perf_counter()
        clips = sample_clips(pipe, prompts, args.steps, args.seed, size, len(prompts), arguments, recipe)
        seconds[name] = (time.perf_counter() - start) / len(prompts)
        rows[name] = {**scores(clips, low, real_clips, features, classifier), "s/clip": seconds[name]}
        sheets[name] = clips[0]
        print(name, rows[name], flush=True)
    real_temporal = {
        "warping error": float(metrics.warping_error(real_clips).mean()),
        "flicker": float(metrics.flicker(real_clips).mean()),
        "frame difference": float(metrics.frame_difference_energy(real_clips).mean()),
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"video_methods_{args.scale}x"
    keys = list(next(iter(rows.values())))
    lines = [
        f"# Methods on emoji-video clips at {args.scale}× ({size}², 8 frames)\n",
        f"Made by `{command}`: {len(prompts)} held-out prompts ({', '.join(prompts)}), {args.steps} steps of "
        f"{type(pipe.scheduler).__name__}, guidance {arguments.get('guidance_scale', 7.5):g}, noise shared between "
        f"frames {arguments.get('frame_noise_share', 0):g}, the same seeds for every method; per-frame SWD (×1e3, "
        f"mean of levels) and FD against {len(real_clips)} "
        f"real test clips at {size}²; semantic: agreement of every frame with the same frame of the 32² clip; RMSE: "
        "median paired RMSE to the 32² clip; s/clip: wall time on one core. Real clips' "
        f"temporal statistics: warping error {real_temporal['warping error']:.4f}, flicker "
        f"{real_temporal['flicker']:.4f}, frame difference {real_temporal['frame difference']:.4f}.\n",
        "| method | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.4g}" for k in keys) + " |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (out / f"{stem}.json").write_text(
        json.dumps({"command": command, "prompts": prompts, "rows": rows, "real": real_temporal}, indent=1)
    )
    labels = list(sheets)
    sheet = labelled_grid([to_pil(sheets[name]) for name in labels], labels, 96)
    save_image(sheet, out / f"{stem}.png", force=True)
    frames = [labelled_grid([[to_pil(sheets[name][k : k + 1])[0]] for name in labels], labels, 96) for k in range(8)]
    save_video(frames, out / f"{stem}.gif", force=True, fps=4)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
