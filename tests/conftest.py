"""Shared fixtures: the data folder, the repository root, and small models for contract tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """$DATA_DIR (CI: ../shared/data); the tests that use it need the real MNIST files."""
    root = Path(os.environ.get("DATA_DIR", ROOT.parent / "shared" / "data"))
    assert (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists(), (
        f"MNIST not found under {root}: set DATA_DIR to the folder holding MNIST/raw"
    )
    return root


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles from scratch, so recompile checks see only their own graphs."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
