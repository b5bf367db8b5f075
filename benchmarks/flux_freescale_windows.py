"""FreeScale's windows on emoji-flux at 2× under the step-fraction time axis: paired RMSE and semantic agreement of
FreeScale (default) and of variants with a longer position window and a weaker detail cosine, on the first 16
held-out prompts (two batches of 8, seeds 0 and 8, 20 steps, the model's CFG). The variants set the restart
strength, the position interpolation's window ``until`` and the detail exponent α explicitly; "FreeScale default"
is the preset with the model family's values.

    python benchmarks/flux_freescale_windows.py            # FreeScale only
    python benchmarks/flux_freescale_windows.py variants   # and the window variants
    python benchmarks/flux_freescale_windows.py strengths scale=2   # windows × restart strength 0.3, 0.5, 0.7
    python benchmarks/flux_freescale_windows.py strengths scale=4 strength=0.3   # the windows at 4×, one strength
    python benchmarks/flux_freescale_windows.py eta scale=2       # UG's η alone and in FreeScale and fast

Run at another commit (a ``git worktree`` of it on ``PYTHONPATH``) for the same rows under that code. Prints one
line a row; benchmarks/results/flux_freescale_windows/README.md keeps the lines with their commands.
"""

from __future__ import annotations

import sys


def main() -> None:
    import torch

    import hiresdiff
    from hiresdiff.core.resample import downsample
    from hiresdiff.data import emoji
    from hiresdiff.eval.metrics.semantic import semantic_agreement
    from hiresdiff.methods.positions import PositionConfig
    from hiresdiff.recipe import Recipe

    torch.set_num_threads(1)
    pipe, settings = hiresdiff.load_pipeline("emoji-flux")
    names = emoji.load(32, "test").names[:16]

    def run(recipe, size):
        batches = [
            hiresdiff.generate(
                pipe,
                names[i : i + 8],
                height=size,
                width=size,
                recipe=recipe,
                seed=i,
                steps=20,
                output_type="pt",
                **settings.arguments(pipe),
            )
            for i in (0, 8)
        ]
        return torch.cat(batches) * 2 - 1

    def variant(strength, until=0.7, alpha=2.0):
        return Recipe.freescale(strength=strength, detail_alpha=alpha) + Recipe(
            positions=PositionConfig("pi", until=until)
        )

    options = dict(a.split("=") for a in sys.argv[1:] if "=" in a)
    scale = int(options.get("scale", 2))
    strengths = [float(s) for s in options.get("strength", "0.3,0.5,0.7").split(",")]
    trained = run(None, 32)
    rows = {"FreeScale default": Recipe.freescale()}
    if "variants" in sys.argv[1:]:
        rows.update(
            {
                "positions until 0.88": variant(0.7, until=0.88),
                "detail alpha 0.5": variant(0.7, alpha=0.5),
                "until 0.88 + alpha 0.5": variant(0.7, until=0.88, alpha=0.5),
            }
        )
    if "eta" in sys.argv[1:]:  # UG's window on the step fraction, alone and in the cascades (restart p = 0.7)
        rows = {
            f"{name} eta {eta}": recipe + Recipe.upsample_guidance(eta=eta)
            for name, recipe in (("UG", Recipe()), ("FreeScale+UG", Recipe.freescale()), ("fast+UG", Recipe.fast()))
            for eta in ((1.0, 0.6, 0.3) if name == "UG" and scale == 4 else (1.0, 0.6))
        }
    if "strengths" in sys.argv[1:]:
        rows = {
            f"strength {s} until {u} alpha {a}": variant(s, until=u, alpha=a)
            for s in strengths
            for u, a in ((0.7, 2.0), (0.88, 2.0), (0.7, 0.5), (0.88, 0.5), (1.0, 0.5))
        }
    for name, recipe in rows.items():
        images = run(recipe, 32 * scale)
        paired = float(((downsample(images, scale) - trained) ** 2).mean(dim=(1, 2, 3)).sqrt().median())
        print(f"{name:40s} paired {paired:.3f} semantic {semantic_agreement(images, trained):.2f}", flush=True)


if __name__ == "__main__":
    main()
