"""emoji-latent's few-step student at its trained size: the LCM-LoRA sampled with LCMScheduler in 1, 2 and 4 steps (no
CFG: the teacher's is distilled in) against the teacher's 20 SDE-DPM-Solver++ steps at its CFG, on the held-out emoji
names (a seeded random pick of them), each image against the held-out real 32² emoji: FD in the random-conv feature
space, SWD mean, and the condition agreement (the fraction whose predicted subgroup is the prompt's emoji's).

    python benchmarks/student_steps.py                                  # the shipped student, 64 prompts
    python benchmarks/student_steps.py lora=runs/emoji_latent_lcm_lora/export count=16
    python benchmarks/student_steps.py sheet=benchmarks/results/student_steps/student_steps.png   # and a contact sheet

Prints one table row per setting; benchmarks/results/student_steps/README.md keeps the rows with their command.
"""

from __future__ import annotations

import sys


def main() -> None:
    import torch
    from diffusers import LCMScheduler

    import hiresdiff
    from hiresdiff.data import emoji
    from hiresdiff.eval import metrics
    from hiresdiff.grid import labelled_grid, save_image
    from hiresdiff.loading.pixel_model import to_pil
    from hiresdiff.models import EMOJI_LATENT_DIR

    options = dict(arg.split("=", 1) for arg in sys.argv[1:])
    lora = options.get("lora", str(EMOJI_LATENT_DIR.parent / "emoji_latent_lcm_lora"))
    count = int(options.get("count", 64))
    torch.set_num_threads(1)
    test = emoji.load(32, "test")
    pick = torch.randperm(len(test.names), generator=torch.Generator().manual_seed(0))[:count]  # as the benchmark
    names = [test.names[i] for i in pick.tolist()]
    features = metrics.RandomConvFeatures(resolution=32, seed=0)
    real = test.images

    def score(images, seconds):
        fd = metrics.frechet_distance(features(images), features(real))
        swd = metrics.sliced_wasserstein(images, real)["mean"]
        asked = metrics.condition_agreement(images, subgroups=test.subgroups[pick].tolist())
        return f"{fd:.3f} | {swd:.1f} | {asked:.2f} | {seconds / len(images):.3f}"

    def sample(pipe, steps, guidance):
        import time

        start, parts = time.perf_counter(), []
        for i in range(0, count, 8):
            out = pipe(names[i : i + 8], num_inference_steps=steps, guidance_scale=guidance, output_type="pt",
                       generator=torch.Generator().manual_seed(i))  # fmt: skip
            parts.append(out.images * 2 - 1)
        return torch.cat(parts), time.perf_counter() - start

    pipe, settings = hiresdiff.load_pipeline("emoji-latent")
    pipe.set_progress_bar_config(disable=True)
    guidance = settings.guidance_scale()
    print("| sampler | steps | FD rand | SWD mean | condition | s/image |\n|---|---|---|---|---|---|")
    images, seconds = sample(pipe, 20, guidance)
    print(f"| teacher, CFG {guidance:g} | 20 | {score(images, seconds)} |")
    columns, labels = [to_pil(real[pick[:8]]), to_pil(images[:8])], ["held-out real", "teacher 20 steps"]
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(lora)
    for steps in (1, 2, 4):
        images, seconds = sample(pipe, steps, 1.0)
        print(f"| student (LCM-LoRA) | {steps} | {score(images, seconds)} |")
        columns, labels = [*columns, to_pil(images[:8])], [*labels, f"student {steps} step{'s' * (steps > 1)}"]
    if "sheet" in options:
        save_image(labelled_grid(columns, labels, 96), options["sheet"], force=True)


if __name__ == "__main__":
    main()
