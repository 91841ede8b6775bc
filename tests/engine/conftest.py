"""Fixtures the engine tests share (their helpers live in ``doubles``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from doubles import registered, write_toy_data


@pytest.fixture
def data(tmp_path: Path):
    """The toy shifts' images, with the toy shifts and models registered for the command line."""
    with registered():
        yield write_toy_data(tmp_path / "data")
