"""The method names, defaults and size cap that the API and the command line share, in a module that imports
nothing: the CLI parses (and answers ``--help``) before torch and diffusers load."""

PRESETS = ("naive", "ug", "self-cascade", "freescale", "fast")  # Recipe.preset names; "a+b" composes them
COMPARISON_METHODS = ("naive", "ug", "self-cascade", "freescale", "self-cascade+ug")  # the main job's columns
DEFAULT_STEPS = 20  # sampling steps on pixel models (pipelines: 30)
DEFAULT_SCHEDULER = "sde-dpm++"  # on pixel models (pipelines: their own)
# The CLI's default cap on an output's pixels. Working memory is linear in pixels: SD 1.5 with FreeScale took
# 4.6 GiB at 1024² in fp32 (benchmarks/results/cost_sd15_cpu.md), so ≈ 18 GiB at 2048², about what 24 GB holds.
MAX_PIXELS = 2048 * 2048
MAX_UPSCALE = 8  # upscaling stops at this many times the model's trained size per side (the methods' 2×–8× range)


def check_max_pixels(height: int, width: int, max_pixels: int) -> None:
    """``ValueError`` naming the size and ``--max-pixels`` for an output above the cap (before any model runs)."""
    if height * width > max_pixels:
        raise ValueError(
            f"the output {height}x{width} has {height * width:,} pixels, above --max-pixels {max_pixels:,}: "
            "choose a smaller size, or raise --max-pixels if this machine has the memory and time"
        )
