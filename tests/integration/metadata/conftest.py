from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.doubles.fake_music import FakeMusic
from tests.doubles.fake_openlibrary import FakeOpenLibrary
from tests.doubles.fake_opensubtitles import FakeOpenSubtitles
from tests.doubles.fake_upstream import FakeUpstream


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture
def music() -> Iterator[FakeMusic]:
    fake = FakeMusic().start()
    yield fake
    fake.stop()


@pytest.fixture
def books() -> Iterator[FakeOpenLibrary]:
    fake = FakeOpenLibrary().start()
    yield fake
    fake.stop()


@pytest.fixture
def subtitles() -> Iterator[FakeOpenSubtitles]:
    fake = FakeOpenSubtitles().start()
    yield fake
    fake.stop()
