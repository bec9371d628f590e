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


TINY_NET = {"width": 4, "depth": 1}


@pytest.fixture(scope="module")
def tiny() -> DatasetSplits:
    """3 classes x 12 images of 1x8x8: for runs of every method in seconds."""
    return toy_splits(num_classes=3, per_class=12, channels=1, size=8)


@pytest.fixture(scope="module")
def tiny_experts(tmp_path_factory, tiny) -> str:
    """2 experts of 3 epochs on `tiny` (network TINY_NET), trained once per test module."""
    from datadistill.methods.trajectory import ExpertSettings, train_experts

    root = tmp_path_factory.mktemp("experts")
    train_experts(ExpertSettings("toy", num_experts=2, epochs=3, model_args=TINY_NET, batch_size=8), root, data=tiny,
                  device="cpu", progress=False, log=lambda m: None)
    return str(root)


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, tiny) -> str:
    """A ConvNet-BN teacher (TINY_NET, 3 epochs) on `tiny`, trained once per test module."""
    from datadistill.teacher import TeacherSettings, train_teacher

    root = tmp_path_factory.mktemp("teacher")
    train_teacher(TeacherSettings("toy", model="convnet_bn", model_args=TINY_NET, epochs=3, batch_size=8), root,
                  data=tiny, device="cpu", progress=False, log=lambda m: None)
    return str(root)
