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


@pytest.fixture(scope="module")
def ray_cluster():
    """A local 2-CPU Ray cluster for one test module's Ray runs (started once: ~10 s), stopped after it."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
