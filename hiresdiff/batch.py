"""Batch generation: every prompt (× seed) of a file through one recipe, resumable, split across processes.

One output per (prompt, seed): ``<key>.png`` and ``<key>.json`` (settings and timings), where the key
is a stable hash of the prompt, the seed and every setting that changes the image (model, method and its
options θ, η, strength, α and upsamplers, size, steps, scheduler, guidance).
Outputs that exist are skipped, so a killed run resumes where it
stopped; files are written atomically (the PNG, then its log, each via a temporary file and a rename),
so a partial output is never left behind under its final name.

Under ``accelerate launch --multi_gpu --num_processes N -m hiresdiff batch …`` the jobs are split with
accelerate's ``PartialState().split_between_processes``, each process on its own device (on a machine
without GPUs the same command starts N CPU processes in a gloo group); launched plainly, the one process
does every job.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from tqdm.auto import tqdm

from hiresdiff.grid import save_image
from hiresdiff.sampling.generate import generate


@dataclass(frozen=True)
class Job:
    prompt: str
    seed: int


#: Settings added after outputs were named: left out of the key while unset, so earlier outputs keep their names.
ADDED_LATER = ("positions", "inversion", "upscaler", "tiles", "stage_scheduler", "stage_lora")


@dataclass(frozen=True)
class BatchSettings:
    """Everything that changes an output besides its prompt and seed."""

    model: str
    method: str
    height: int
    width: int
    steps: int = 30
    scheduler: Optional[str] = None
    guidance_scale: float = 7.5
    negative_prompt: Optional[str] = None
    theta: Optional[float] = None  # the method's options (hiresdiff.options.MethodOptions); None: the preset's
    eta: Optional[float] = None
    strength: Optional[float] = None
    alpha: Optional[float] = None
    upsamplers: Optional[str] = None
    positions: Optional[str] = None  # ADDED_LATER: left out of the key while unset
    inversion: Optional[float] = None
    upscaler: Optional[str] = None
    tiles: Optional[float] = None
    stage_scheduler: Optional[str] = None
    stage_lora: Optional[str] = None

    def key(self, job: Job) -> str:
        """A stable name for ``job``'s output: the first 16 hex digits of SHA-256 over the settings and the job."""
        settings = {k: v for k, v in asdict(self).items() if not (k in ADDED_LATER and v is None)}
        text = json.dumps({**settings, "prompt": job.prompt, "seed": job.seed}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_prompts(path) -> list[str]:
    """Non-empty lines of ``path`` that do not start with ``#``; ``ValueError`` if there are none."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {str(path)!r} does not exist")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not prompts:
        raise ValueError(f"prompts file {str(path)!r} has no prompts (one per line; # starts a comment)")
    return prompts


def jobs_for(prompts: list[str], seeds: list[int]) -> list[Job]:
    return [Job(p, s) for p in prompts for s in seeds]


def pending(jobs: list[Job], settings: BatchSettings, out_dir: Path) -> list[Job]:
    """The jobs whose log (written last) is not there yet."""
    return [j for j in jobs if not (out_dir / f"{settings.key(j)}.json").exists()]


def write_json_atomically(data: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def run_batch(
    settings: BatchSettings, jobs: list[Job], out_dir, *, recipe, pipe_loader, progress: bool = True
) -> list[str]:
    """Run this process's share of the pending ``jobs``; return the keys it wrote.

    ``pipe_loader(device)`` loads the pipeline and returns it with its call's arguments (only if this process has work);
    ``recipe`` is the method's
    :class:`~hiresdiff.recipe.Recipe`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # cpu=True lets processes started by torchrun on a machine without GPUs form a gloo group (MULTI_CPU)
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    todo = pending(jobs, settings, out_dir)  # every process sees the same list, so the split is consistent
    written = []
    with state.split_between_processes(todo) as mine:
        if not mine:
            return written
        pipe, kwargs = pipe_loader(str(state.device))
        bar = tqdm(mine, desc=f"batch (process {state.process_index + 1}/{state.num_processes})", disable=not progress)
        for job in bar:
            key = settings.key(job)
            start = time.perf_counter()
            image = generate(
                pipe,
                job.prompt,
                height=settings.height,
                width=settings.width,
                recipe=recipe,
                seed=job.seed,
                steps=settings.steps,
                **kwargs,
            )[0]
            seconds = time.perf_counter() - start
            save_image(image, out_dir / f"{key}.png", force=True)  # a png without its log is an interrupted job
            write_json_atomically(
                {
                    **asdict(settings),
                    "prompt": job.prompt,
                    "seed": job.seed,
                    "file": f"{key}.png",
                    "seconds": round(seconds, 3),
                    "process": state.process_index,
                    "num_processes": state.num_processes,
                    "device": str(state.device),
                },
                out_dir / f"{key}.json",
            )
            written.append(key)
    return written
