"""Markers shared by the test modules."""

import pytest

from hiresdiff.data import emoji

#: Tests that build the emoji data set: they need Debian's emoji font and Unicode's emoji list.
needs_emoji_data = pytest.mark.skipif(
    not (emoji.FONT_PATH.exists() and emoji.EMOJI_TEST_PATH.exists()),
    reason="needs Debian packages fonts-noto-color-emoji and unicode-data (.ci/run installs them)",
)
