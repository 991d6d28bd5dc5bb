import os
from pathlib import Path

import pytest
import torch


FIXTURES = Path(__file__).parent / "fixtures"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(autouse=True)
def fresh_compiler_state():
    """torch 2.13's CPU inductor can fail to build a masked flex-attention kernel after an unmasked one was compiled
    in the same process, so no test inherits another's compiled kernels."""
    yield
    torch._dynamo.reset()
