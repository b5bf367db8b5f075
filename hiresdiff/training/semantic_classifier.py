"""Training recipe of the semantic metric's classifier (:mod:`hiresdiff.eval.metrics.semantic`): the Unicode subgroup of
an emoji from its picture, at any of the sizes the methods make.

Each training image is a real training-split emoji at 128², 64² or 32² (its exact block averages), brought to the
classifier's 64² input as a method's output would be: shrunk with antialiasing from 128², as is at 64², enlarged from
32² by nearest, bilinear or bicubic resampling; then shifted by up to 4 pixels and, half of the time, given Gaussian
noise (σ up to 0.1) — what generated images carry and real ones do not. Cross-entropy with label smoothing 0.1, AdamW,
EMA; resumable through the shared loop (:class:`hiresdiff.training.loop.Phase`). The held-out accuracy at each size is
written into the shipped folder's ``training.json``.

    hiresdiff train-semantic --ship hiresdiff/models/emoji_subgroups
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from hiresdiff.data import emoji
from hiresdiff.eval.metrics.semantic import INPUT_SIZE, SemanticClassifier, SubgroupClassifier, to_input_size
from hiresdiff.training.loop import Phase, add_run_arguments, export_run, start_run

ENLARGE_MODES = ("nearest", "bilinear", "bicubic")


def subgroup_groups(data: emoji.EmojiData) -> list[str]:
    """The group of each subgroup (every emoji of a subgroup shares its group)."""
    groups = ["" for _ in data.subgroup_names]
    for subgroup, label in zip(data.subgroups.tolist(), data.labels.tolist()):
        groups[subgroup] = data.group_names[label]
    return groups


def as_generated(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``images`` at 64² as a method's output might be: resampled from their size, shifted, sometimes noised."""
    if images.shape[-1] < INPUT_SIZE:
        mode = ENLARGE_MODES[int(torch.randint(len(ENLARGE_MODES), (1,), generator=generator))]
        images = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode=mode).clamp(-1, 1)
    else:
        images = to_input_size(images)
    dy, dx = (int(v) for v in torch.randint(-4, 5, (2,), generator=generator))
    images = torch.roll(images, shifts=(dy, dx), dims=(2, 3))  # the background is white all round
    noisy = torch.rand(len(images), 1, 1, 1, generator=generator) < 0.5
    sigma = 0.1 * torch.rand(len(images), 1, 1, 1, generator=generator)
    return (images + noisy * sigma * torch.randn(images.shape, generator=generator)).clamp(-1, 1)


@torch.no_grad()
def held_out_accuracy(classifier: SemanticClassifier, data_path=None) -> dict[int, float]:
    """Accuracy on the held-out emoji (families the classifier never saw) at 128², 64² and 32²."""
    accuracy = {}
    for size in (128, 64, 32):
        test = emoji.load(size, "test", data_path)
        accuracy[size] = round(float((classifier.predict(test.images) == test.subgroups).float().mean()), 4)
    return accuracy


def train(args) -> None:
    run_dir = start_run(args)
    sets = {size: emoji.load(size, "train", args.data) for size in (128, 64, 32)}
    names, groups = sets[32].subgroup_names, subgroup_groups(sets[32])
    model = SubgroupClassifier(len(names))
    phase = Phase("classifier", {"model": model}, run_dir, args, args.steps, args.lr)
    generator = torch.Generator().manual_seed(args.seed + phase.step)

    def loss() -> torch.Tensor:
        size = (128, 64, 32)[int(torch.randint(3, (1,), generator=generator))]
        data = sets[size]
        pick = torch.randint(len(data.images), (args.batch_size,), generator=generator)
        logits = model(as_generated(data.images[pick], generator))
        return F.cross_entropy(logits, data.subgroups[pick], label_smoothing=0.1)

    def export() -> None:
        classifier = SemanticClassifier(phase.ema_modules()["model"], names, groups)
        accuracy = held_out_accuracy(classifier, args.data)

        info = {
            "held_out_accuracy": accuracy,
            "chance": round(1 / len(names), 4),
            "command": f"hiresdiff train-semantic --steps {args.steps} "
            f"--batch-size {args.batch_size} --lr {args.lr} --seed {args.seed}",
        }
        export_run(args, run_dir, phase, classifier.save, info)

    phase.run(loss, args.save_every, args.log_every, export)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_run_arguments(p, "emoji_subgroups")  # the shared options, with this recipe's defaults below
    p.add_argument("--steps", type=int, default=3000)
    p.set_defaults(lr=2e-3, warmup=100, batch_size=64)
    return p
