from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

import pytest

from tests.doubles.fake_music import FakeMusic
from tests.doubles.fake_openlibrary import FakeOpenLibrary
from tests.doubles.fake_opensubtitles import FakeOpenSubtitles
from tests.doubles.fake_upstream import FakeUpstream, LoopbackFake

F = TypeVar("F", bound=LoopbackFake)


def running(fake: F) -> Iterator[F]:
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    yield from running(FakeUpstream())


@pytest.fixture
def music() -> Iterator[FakeMusic]:
    yield from running(FakeMusic())


@pytest.fixture
def books() -> Iterator[FakeOpenLibrary]:
    yield from running(FakeOpenLibrary())


@pytest.fixture
def subtitles() -> Iterator[FakeOpenSubtitles]:
    yield from running(FakeOpenSubtitles())
