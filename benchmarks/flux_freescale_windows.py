"""FreeScale's windows on emoji-flux at 2× under the step-fraction time axis: paired RMSE and semantic agreement of
FreeScale (default) and of variants with a longer position window and a weaker detail cosine, on the first 16
held-out prompts (two batches of 8, seeds 0 and 8, 20 steps, the model's CFG, restart strength 0.7).

    python benchmarks/flux_freescale_windows.py            # FreeScale only
    python benchmarks/flux_freescale_windows.py variants   # and the window variants

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

    trained = run(None, 32)
    longer = Recipe(positions=PositionConfig("pi", until=0.88))
    rows = {"FreeScale default": Recipe.freescale(strength=0.7)}
    if sys.argv[1:] == ["variants"]:
        rows.update(
            {
                "positions until 0.88": Recipe.freescale(strength=0.7) + longer,
                "detail alpha 0.5": Recipe.freescale(strength=0.7, detail_alpha=0.5),
                "until 0.88 + alpha 0.5": Recipe.freescale(strength=0.7, detail_alpha=0.5) + longer,
            }
        )
    for name, recipe in rows.items():
        images = run(recipe, 64)
        paired = float(((downsample(images, 2) - trained) ** 2).mean(dim=(1, 2, 3)).sqrt().median())
        print(f"{name:40s} paired {paired:.3f} semantic {semantic_agreement(images, trained):.2f}", flush=True)


if __name__ == "__main__":
    main()
