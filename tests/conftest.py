import os

# Nothing in the test suite may reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded_torch():
    """Every test starts from the same torch RNG state, so a test's random data never depends on
    which tests ran before it (unseeded draws made a tolerance check flaky once)."""
    torch.manual_seed(0)
