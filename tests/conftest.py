"""Shared fixtures for the tests of the TGDP core (tgdp/): one thread, a seeded small GMM task."""

from __future__ import annotations

import pytest
import torch

import tests.study_util  # noqa: F401 - Ray token authentication and the signing secret for every test
from tgdp.config import GMMConfig
from tgdp.data.gmm import GMMTask


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread per test: the suite shares 2 slow cores with Ray tests, and one thread keeps
    timings and floating-point reductions reproducible."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def gmm_task() -> GMMTask:
    """The DESIGN §2 mixture (d = 2, variance 0.1, mu_S = (.5, .5), mu_T = (.5, -.5)) at n = 100."""
    return GMMTask(GMMConfig(m=10000, n=100, seed=0))


@pytest.fixture(scope="session")
def small_task() -> GMMTask:
    """The same mixture with few samples, for stage smoke tests that must run in well under a second."""
    return GMMTask(GMMConfig(m=256, n=32, seed=3))


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray runtime (2 CPUs) shared by the tests of one module."""
    import ray

    ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # never join a stray Ray
    yield
    ray.shutdown()
