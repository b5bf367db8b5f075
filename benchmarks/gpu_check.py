"""The checks only a GPU can make, in one run of a few minutes (``benchmarks/gpu_check.sh`` calls it).

1. Every preset (and FreeScale+UG) on every tiny pipeline kind (``tests/tiny_pipelines.py``: SD 1.5, SD 2 v, SDXL,
   AnimateDiff, pixel, FLUX, SD3) on the device in fp16 and bf16 at 2×: the output has the right shape, is finite,
   and the pipeline's UNet/transformer stayed on the device in its dtype.
2. The real SDXL architecture (random weights, fp16) at 1024², 2048² and 4096²: seconds per image and the
   allocator's peak (``torch.cuda.max_memory_allocated``) of naive, FreeScale and the fast recipe, against
   :func:`hiresdiff.cost.plan.plan`'s predicted peak and its FLOPs ratio (the time ratio should follow it).

Writes ``benchmarks/results/gpu_check.md`` (and ``.json``) naming the command; stops starting new cases when
``--minutes`` are spent, keeping what it measured. ``--device cpu --quick`` runs the tiny part on the CPU in bf16
(to check the script itself where no GPU is; the real architecture needs a GPU).

    python benchmarks/gpu_check.py --minutes 7
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny pipelines

TINY_KINDS = ("sd15", "sd2v", "sdxl", "animatediff", "pixel", "flux", "sd3")
RECIPES = ("naive", "ug", "self-cascade", "freescale", "freescale+ug", "fast")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def tiny_case(kind: str, recipe: str, dtype: torch.dtype, device: str) -> dict:
    from tiny_pipelines import FLOW_TRAINED_LATENT, load

    import hiresdiff
    from hiresdiff.denoisers.registry import find_denoiser
    from hiresdiff.loading.pixel_model import sample

    pipe = load(kind).to(device, dtype)
    denoiser, _ = find_denoiser(pipe)
    if kind == "pixel":
        out = sample(denoiser, pipe.scheduler, height=32, width=32, recipe=recipe, steps=3, progress=False)
    else:
        size = 2 * (FLOW_TRAINED_LATENT * 2 if kind in ("flux", "sd3") else 16)
        frames = {"num_frames": 2} if kind == "animatediff" else {}
        out = hiresdiff.generate(
            pipe, "a cat", height=size, width=size, recipe=recipe, steps=3, output_type="pt", **frames
        )
        out = out if isinstance(out, torch.Tensor) else torch.as_tensor(out)
    on_device = all(p.device.type == torch.device(device).type and p.dtype == dtype for p in denoiser.parameters())
    return {"ok": bool(torch.isfinite(out.float()).all()) and on_device, "shape": list(out.shape)}


def real_case(arch: str, size: int, recipe: str, steps: int, device: str, dtype: str) -> dict:
    from hiresdiff.cost.architectures import PROMPT, build_pipeline
    from hiresdiff.cost.measured import peak, reset_peak
    from hiresdiff.cost.plan import DTYPES as PLAN_DTYPES
    from hiresdiff.cost.plan import plan
    from hiresdiff.sampling.generate import generate

    predicted = plan(arch, size, method=recipe, steps=steps, dtype=dtype)
    pipe = build_pipeline(arch, device=device, dtype=PLAN_DTYPES[dtype])
    if size * size > 2048 * 2048:
        pipe.vae.enable_tiling()
    weights = torch.cuda.memory_allocated() if device.startswith("cuda") else 0
    reset_peak(device)
    start = time.perf_counter()
    generate(pipe, PROMPT, height=size, width=size, recipe=recipe, steps=steps, output_type="pt")
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    measured_working = (peak(device) - weights) if device.startswith("cuda") else None
    del pipe
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {
        "seconds": seconds,
        "predicted_working_gib": predicted.working_bytes / 2**30,
        "measured_working_gib": None if measured_working is None else measured_working / 2**30,
        "predicted_peak_gib": predicted.peak_bytes / 2**30,
        "flops_ratio": predicted.relative_flops,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--minutes", type=float, default=7.0)
    p.add_argument(
        "--sizes", type=int, nargs="*", default=None, help="SDXL sizes (default 1024 2048 4096; --quick: none)"
    )
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="tiny sizes and one dtype: check the script itself (CPU)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check.md"))
    args = p.parse_args()
    sizes = args.sizes if args.sizes is not None else ([] if args.quick else [1024, 2048, 4096])
    deadline = time.time() + 60 * args.minutes
    command = "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:])
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    results = {"command": command, "device": device_name, "tiny": [], "real": []}
    dtypes = ["bf16"] if args.quick else list(DTYPES)
    for kind in TINY_KINDS[:1] if args.quick else TINY_KINDS:
        for dtype in dtypes:
            for recipe in RECIPES:
                if time.time() > deadline:
                    break
                try:
                    row = tiny_case(kind, recipe, DTYPES[dtype], args.device)
                except Exception as error:  # recorded, the check goes on
                    row = {
                        "ok": False,
                        "error": f"{type(error).__name__}: {error}"[:300],
                        "trace": traceback.format_exc()[-1500:],
                    }
                results["tiny"].append({"kind": kind, "dtype": dtype, "recipe": recipe, **row})
                print(json.dumps(results["tiny"][-1])[:300], flush=True)
                write(results, Path(args.out))  # after every case: a run that is stopped keeps what it measured
    for size in sizes:
        for recipe in ("naive", "freescale", "fast"):
            if time.time() > deadline:
                break
            try:
                row = real_case(
                    "sdxl", size, recipe, args.steps, args.device, "fp16" if args.device != "cpu" else "fp32"
                )
            except Exception as error:
                row = {"error": f"{type(error).__name__}: {error}"[:300]}
            results["real"].append({"arch": "sdxl", "size": size, "recipe": recipe, **row})
            print(json.dumps(results["real"][-1]), flush=True)
            write(results, Path(args.out))


def write(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    ok = sum(r["ok"] for r in results["tiny"])
    lines = [
        f"# GPU check on {results['device']}\n",
        f"Made by `{results['command']}`.\n",
        f"Tiny pipelines: {ok} of {len(results['tiny'])} runs finite, shaped and on the device in their dtype.\n",
    ]
    lines += [
        f"- FAILED {r['kind']} {r['dtype']} {r['recipe']}: {r.get('error', 'not finite or moved')}"
        for r in results["tiny"]
        if not r["ok"]
    ]
    lines += [
        "\n| arch | size | recipe | s/image | FLOPs ×direct (plan) | "
        "working GiB measured | predicted | peak GiB predicted |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["real"]:
        if "error" in r:
            lines.append(f"| {r['arch']} | {r['size']}² | {r['recipe']} | {r['error']} | | | | |")
            continue
        measured = "—" if r["measured_working_gib"] is None else f"{r['measured_working_gib']:.2f}"
        lines.append(
            f"| {r['arch']} | {r['size']}² | {r['recipe']} | {r['seconds']:.1f} | {r['flops_ratio']:.2f} | "
            f"{measured} | {r['predicted_working_gib']:.2f} | {r['predicted_peak_gib']:.2f} |"
        )
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
