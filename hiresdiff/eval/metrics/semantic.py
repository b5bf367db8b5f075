"""Semantic fidelity: does the high-resolution result still show what the trained-size sample showed?

Every other metric here is local (patch statistics, random-convolution features, fine-band energy, pixel RMSE at the
trained size): a face and a blob of the same colours score alike. This one asks a classifier of what an emoji *is*.

The representation: the emoji's Unicode **subgroup** (``face-smiling``, ``animal-mammal``, ``food-fruit``, … 99 of
them), predicted by a small CNN trained on the real emoji at 128², 64² and 32², sharp and enlarged
(:mod:`hiresdiff.training.semantic_classifier`, shipped in ``hiresdiff/models/emoji_subgroups``). Why subgroups: the 9
groups are too coarse (any smiling blob is a "Smileys & Emotion"), the emoji's identity cannot be learnt for held-out
emoji (one image each), and a subgroup is what a person names when asked what the picture shows ("a smiling face",
"a fruit"); its held-out accuracy can be measured on emoji the classifier never saw.

:func:`semantic_agreement` is the fraction of high-resolution results whose predicted subgroup equals that of the
trained-size samples they came from, enlarged to the same size: an enlargement scores 1.0 by construction, unrelated
pairs score near the chance of two predictions agreeing. :func:`condition_agreement` compares predictions with what
the model was asked for (a group label, a prompt's subgroup).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from hiresdiff.eval.metrics._checks import _check_images
from hiresdiff.models import SEMANTIC_CLASSIFIER_DIR

#: Every input is resized to this square size (antialiased when shrinking, bicubic when enlarging).
INPUT_SIZE = 64


def to_input_size(images: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """``images`` (N, 3, H, W) in [-1, 1] resized to ``size``² (antialiased bilinear down, bicubic up)."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    if min(images.shape[-2:]) >= size:
        return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


class SubgroupClassifier(nn.Module):
    """A small CNN: four stages of two 3×3 convs (``width``·(1, 2, 4, 4) channels; GroupNorm, SiLU, 2× average pooling
    between them), global average pooling and a linear layer to the subgroup logits; input (N, 3, 64, 64) in [-1, 1]."""

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        channels = (3, width, 2 * width, 4 * width, 4 * width)
        layers = []
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU()]
            layers += [nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU()]
            if i < len(channels) - 2:
                layers.append(nn.AvgPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels[-1], num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(to_input_size(images)).mean(dim=(2, 3)))


class SemanticClassifier:
    """The trained :class:`SubgroupClassifier` with its subgroup names and the group each subgroup belongs to."""

    def __init__(self, model: SubgroupClassifier, subgroup_names: list[str], subgroup_groups: list[str]):
        self.model, self.subgroup_names, self.subgroup_groups = (
            model.eval().requires_grad_(False),
            subgroup_names,
            subgroup_groups,
        )

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """The predicted subgroup index of each image (N, 3, H, W) in [-1, 1], any size."""
        _check_images(images, "images")
        images = images.float().cpu()
        return torch.cat([self.model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(self.model.state_dict(), folder / "model.safetensors")
        config = {
            "num_classes": len(self.subgroup_names),
            "width": self.model.head.in_features // 4,
            "input_size": INPUT_SIZE,
            "subgroup_names": self.subgroup_names,
            "subgroup_groups": self.subgroup_groups,
        }
        (folder / "config.json").write_text(json.dumps(config, indent=1) + "\n")

    @classmethod
    def load(cls, folder: Optional[Path] = None) -> SemanticClassifier:
        """The classifier saved in ``folder`` (default: the shipped one)."""
        folder = Path(folder or SEMANTIC_CLASSIFIER_DIR)
        config = json.loads((folder / "config.json").read_text())
        model = SubgroupClassifier(config["num_classes"], config["width"])
        model.load_state_dict(load_file(folder / "model.safetensors"))
        return cls(model, config["subgroup_names"], config["subgroup_groups"])


_SHIPPED: dict = {}


def shipped_classifier() -> SemanticClassifier:
    """The shipped classifier, loaded once per process."""
    if "classifier" not in _SHIPPED:
        _SHIPPED["classifier"] = SemanticClassifier.load()
    return _SHIPPED["classifier"]


def semantic_matches(
    high: torch.Tensor, low: torch.Tensor, classifier: Optional[SemanticClassifier] = None
) -> torch.Tensor:
    """Per pair, whether the predicted subgroup of the high-resolution result ``high[i]`` (N, 3, H, W in [-1, 1]) equals
    that of the trained-size sample ``low[i]`` (N, 3, h, w) it came from, enlarged (bicubic) to H×W first."""
    _check_images(high, "high")
    _check_images(low, "low")
    if len(high) != len(low):
        raise ValueError(f"high and low must pair up: {len(high)} vs {len(low)} images")
    classifier = classifier or shipped_classifier()
    enlarged = F.interpolate(low.float(), size=high.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)
    return classifier.predict(high) == classifier.predict(enlarged)


def semantic_agreement(high: torch.Tensor, low: torch.Tensor, classifier: Optional[SemanticClassifier] = None) -> float:
    """The fraction of pairs that :func:`semantic_matches`: enlargement scores 1.0, unrelated pairs near chance."""
    return float(semantic_matches(high, low, classifier).float().mean())


def condition_matches(
    images: torch.Tensor,
    subgroups: Optional[torch.Tensor] = None,
    groups: Optional[list] = None,
    classifier: Optional[SemanticClassifier] = None,
) -> torch.Tensor:
    """Per image, whether its prediction matches what was asked for: its ``subgroups`` entry (indices, e.g. of a
    prompt's emoji) or, for a model conditioned on the 9 groups, its ``groups`` entry (names)."""
    if (subgroups is None) == (groups is None):
        raise ValueError("condition_agreement takes subgroups or groups, one of them")
    classifier = classifier or shipped_classifier()
    predicted = classifier.predict(images)
    if subgroups is not None:
        return predicted == torch.as_tensor(subgroups)
    return torch.tensor([classifier.subgroup_groups[p] == g for p, g in zip(predicted.tolist(), groups)])


def condition_agreement(
    images: torch.Tensor,
    subgroups: Optional[torch.Tensor] = None,
    groups: Optional[list] = None,
    classifier: Optional[SemanticClassifier] = None,
) -> float:
    """The fraction of ``images`` that :func:`condition_matches` what was asked for."""
    return float(condition_matches(images, subgroups, groups, classifier).float().mean())
