"""How many graph breaks each recipe's per-call parts cause in one ``torch.compile``d UNet call (torch._dynamo.explain).

Runs a 2× stage's call of the tiny SD 1.5 test UNet (the parts and their Python-side decisions are the same on
any SD/SDXL UNet) with the stage's hooks attached, and writes ``benchmarks/results/compile_graph_breaks.md``.

    python benchmarks/compile_graph_breaks.py
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from pathlib import Path

import torch
import torch._dynamo as dynamo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny pipelines are built by the tests' helper

from tiny_pipelines import load  # noqa: E402

from hiresdiff.recipe import Recipe  # noqa: E402
from hiresdiff.sampling.stage_parts import stage_modifications  # noqa: E402

PRESETS = ("naive", "self-cascade", "ug", "freescale", "freescale+ug")
COMMAND = "python benchmarks/compile_graph_breaks.py"


def main() -> None:
    warnings.simplefilter("ignore")
    pipe = load("sd15")
    unet = pipe.unet
    x, context, t = torch.randn(2, 4, 16, 16), torch.randn(2, 16, 32), torch.tensor(900)
    rows = []
    for preset in PRESETS:
        recipe = Recipe.preset(preset)
        stage = recipe.stages((8, 8), (16, 16), 2)[-1]
        with stage_modifications(unet, recipe, stage, pipe.scheduler):
            dynamo.reset()
            explained = dynamo.explain(lambda a, b, c: unet(a, b, encoder_hidden_states=c).sample)(x, t, context)
        reasons = Counter(str(b.reason).splitlines()[0][:80] for b in explained.break_reasons)
        top = "; ".join(f"{n}× {r}" for r, n in reasons.most_common(3)) or "-"
        rows.append(f"| {preset} | {explained.graph_count} | {explained.graph_break_count} | {top} |")
        print(rows[-1])
    out = ROOT / "benchmarks" / "results" / "compile_graph_breaks.md"
    out.write_text(
        "# Graph breaks of one compiled UNet call in a 2× stage, per recipe\n\n"
        f"Made by `{COMMAND}` (torch {torch.__version__}).\n\n"
        "| recipe | graphs | graph breaks | most frequent reasons |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
