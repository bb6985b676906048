"""Fixtures shared by the dashboard tests: a tiny synthetic bundle, the explorer's data on it, a fresh selection."""
import pytest

from explorer.data import ExplorerData
from explorer.state import SelectionState
from precompute.synthetic_bundle import write_synthetic_bundle

TINY = dict(n_galaxies=24, bins_per_galaxy=10, som_shape=(6, 6), som2_shape=(4, 4), dlog10_wave=2e-3, image_size=16)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    return write_synthetic_bundle(tmp_path_factory.mktemp("bundle") / "tiny", seed=5, **TINY)


@pytest.fixture(scope="module")
def data(tiny_bundle):
    """One ExplorerData per test module, as one dashboard process would load it."""
    return ExplorerData(tiny_bundle)


@pytest.fixture
def state(data):
    return SelectionState(data)
