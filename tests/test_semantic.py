"""The semantic metric: its classifier knows held-out emoji, an enlargement scores 1, a shuffled pairing scores near
chance, a blurred or noised copy keeps its meaning while another emoji does not."""

import pytest
import torch
import torch.nn.functional as F
from markers import needs_emoji_data

from hiresdiff.data import emoji
from hiresdiff.eval import condition_agreement, semantic_agreement
from hiresdiff.eval.metrics.semantic import SemanticClassifier, shipped_classifier

#: The held-out accuracy the shipped classifier must keep at every size (measured 0.61-0.62, its training.json;
#: chance 0.01).
ACCURACY_FLOOR = 0.55


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    path = emoji.build(tmp_path_factory.mktemp("data"), progress=False)
    return {size: emoji.load(size, "test", path) for size in (128, 64, 32)}


def test_an_enlargement_scores_one_by_construction_and_bad_input_is_named():
    low = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    high = F.interpolate(low, size=(128, 128), mode="bicubic", align_corners=False).clamp(-1, 1)
    assert semantic_agreement(high, low) == 1.0
    with pytest.raises(ValueError, match="high and low must pair up"):
        semantic_agreement(high, low[:5])
    with pytest.raises(ValueError, match="subgroups or groups"):
        condition_agreement(high)


def test_the_shipped_classifier_round_trips(tmp_path):
    classifier = shipped_classifier()
    classifier.save(tmp_path / "copy")
    again = SemanticClassifier.load(tmp_path / "copy")
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert torch.equal(again.predict(images), classifier.predict(images))
    assert len(classifier.subgroup_names) == len(classifier.subgroup_groups) == 99  # the subgroups of the data set


@needs_emoji_data
def test_the_classifier_knows_the_subgroups_of_held_out_emoji_at_every_size(test_split):
    classifier = shipped_classifier()
    for size, data in test_split.items():
        assert data.subgroup_names == classifier.subgroup_names
        accuracy = float((classifier.predict(data.images) == data.subgroups).float().mean())
        assert accuracy >= ACCURACY_FLOOR, (size, accuracy)


@needs_emoji_data
def test_copies_keep_their_meaning_and_other_emoji_or_shuffled_pairs_do_not(test_split):
    low, high = test_split[32].images, test_split[128].images
    blurred = F.avg_pool2d(F.pad(high, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    noised = (high + 0.1 * torch.randn(high.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    shuffled = high[torch.randperm(len(high), generator=torch.Generator().manual_seed(1))]
    assert semantic_agreement(high, low) >= 0.7  # the real 128² emoji and its own 32² block average
    assert semantic_agreement(blurred, low) >= 0.7 and semantic_agreement(noised, low) >= 0.7
    assert semantic_agreement(shuffled, low) <= 0.2  # unrelated pairs: near the chance of two predictions agreeing
    groups = [test_split[128].group_names[label] for label in test_split[128].labels.tolist()]
    assert condition_agreement(high, groups=groups) >= 0.6
    assert condition_agreement(high, subgroups=test_split[128].subgroups) >= ACCURACY_FLOOR
