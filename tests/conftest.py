"""Shared fixtures: a tiny in-memory dataset so method and runner tests need no files."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from datadistill.data import DatasetSplits
from toydata import toy_splits

SHARED_DATA = Path(os.environ.get("DATADISTILL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks run faster on one thread, and are immune to a busy machine's thread contention.
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def toy() -> DatasetSplits:
    return toy_splits()


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "mnist").exists():
        pytest.skip("real data folder ../shared/data is absent")
    return SHARED_DATA
