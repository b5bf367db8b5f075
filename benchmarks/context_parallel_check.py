"""hiresdiff under diffusers' context parallelism, on a machine with two or more GPUs (never in CI: diffusers'
``enable_parallelism`` places rank r on accelerator r mod the device count, so it cannot run on a CPU).

    torchrun --nproc-per-node 2 benchmarks/context_parallel_check.py   # from benchmarks/gpu_check.sh when 2+ GPUs

Every rank builds the same tiny random Wan pipeline (tests/tiny_pipelines.py, seeded), splits its transformer's
tokens over the ranks (Ulysses, then ring attention), and runs the recipes that compose with it (naive, UG,
Self-Cascade, the fast recipe and FreeScale without its position rescaling and scale fusion) at 2× and 4× its trained
size; rank 0 compares each clip with the same run on one GPU and checks that the parts on the whole token grid are
refused before any call. Writes benchmarks/results/context_parallel_check.md (and into $OUT when set).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("naive", "ug", "self-cascade", "fast-no-positions", "freescale-no-positions-no-fusion")


def recipe(name: str):
    from hiresdiff.recipe import Recipe

    if name == "fast-no-positions":
        return Recipe.fast(dilation=False)
    if name == "freescale-no-positions-no-fusion":
        return Recipe.freescale(dilation=False, fusion=False)
    return name


def clip(pipe, name: str, size: int) -> torch.Tensor:
    import hiresdiff

    return hiresdiff.generate(
        pipe,
        "a red cat",
        height=size,
        width=size,
        num_frames=5,
        recipe=recipe(name),
        seed=3,
        steps=8,
        trained_size=32,
        output_type="latent",
        max_sequence_length=16,
        guidance_scale=3.0,
    ).float()


def main() -> None:
    from diffusers import ContextParallelConfig, DiffusionPipeline

    sys.path.insert(0, str(ROOT / "tests"))
    import tiny_pipelines

    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(rank)
    folder = tiny_pipelines.saved("wan") if rank == 0 else None
    shared = [str(folder)]
    dist.broadcast_object_list(shared, src=0)
    lines = ["# Context parallelism with hiresdiff (tiny Wan, 2 GPUs)\n", "| mode | recipe | size | max abs diff |"]
    lines.append("|---|---|---|---|")
    single = DiffusionPipeline.from_pretrained(shared[0]).to("cuda")
    single.set_progress_bar_config(disable=True)
    for mode, config in (("ulysses", ContextParallelConfig(ulysses_degree=world)),):
        pipe = DiffusionPipeline.from_pretrained(shared[0]).to("cuda")
        pipe.set_progress_bar_config(disable=True)
        pipe.transformer.enable_parallelism(config=config)
        for name in RECIPES:
            for size in (64, 128):
                ours = clip(pipe, name, size)
                reference = clip(single, name, size)
                lines.append(f"| {mode} | {name} | {size}² | {float((ours - reference).abs().max()):.2e} |")
        try:
            clip(pipe, "freescale", 64)
            lines.append(f"| {mode} | freescale | 64² | NOT refused |")
        except ValueError as error:
            lines.append(f"| {mode} | freescale | 64² | refused: {str(error)[:80]}… |")
    if rank == 0:
        text = "\n".join(lines) + "\n"
        out = ROOT / "benchmarks" / "results" / "context_parallel_check.md"
        out.write_text(text)
        if os.environ.get("OUT"):
            (Path(os.environ["OUT"]) / out.name).write_text(text)
        print(text)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
