"""Markers shared by the test modules."""

import importlib.util

import pytest

from hiresdiff.data import emoji

#: Tests that build the emoji data set: they need Debian's emoji font and Unicode's emoji list.
needs_emoji_data = pytest.mark.skipif(
    not (emoji.FONT_PATH.exists() and emoji.EMOJI_TEST_PATH.exists()),
    reason="needs Debian packages fonts-noto-color-emoji and unicode-data (.ci/run installs them)",
)


def needs_spandrel(test):
    """Tests of the 'sr' extra (spandrel, which imports torchvision): marked ``sr``, which ``.ci/run`` runs in a second
    venv that has it; skipped, saying so, where spandrel is not installed."""
    skip = pytest.mark.skipif(
        importlib.util.find_spec("spandrel") is None,
        reason="needs the 'sr' extra (spandrel with a torchvision matching torch): .ci/run tests it in a second venv",
    )
    return pytest.mark.sr(skip(test))
