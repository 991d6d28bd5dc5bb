import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import llada_hf  # noqa: F401  (registers the models with the Auto classes)


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


@pytest.fixture(scope="module")
def llada():
    """The tiny random LLaDA 1.x fixture in float64 (modules may define their own `llada`)."""
    return AutoModelForCausalLM.from_pretrained(FIXTURES / "llada-tiny-random", dtype=torch.float64)


@pytest.fixture(scope="module")
def llada2():
    """The tiny random LLaDA2.0 fixture in float64 (modules may define their own `llada2`)."""
    return AutoModelForCausalLM.from_pretrained(FIXTURES / "llada2-moe-tiny-random", dtype=torch.float64)


@pytest.fixture(autouse=True)
def fresh_compiler_state():
    """torch 2.13's CPU inductor can fail to build a masked flex-attention kernel after an unmasked one was compiled
    in the same process, so no test inherits another's compiled kernels."""
    yield
    torch._dynamo.reset()


@pytest.fixture
def one_thread():
    """For training tests on tiny models: matrices this small gain nothing from intra-op threads, while on a busy
    2-core machine OpenMP threads waiting on each other made a training 8x slower (260 s instead of 31 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
