"""Bundles shared by the tests, each made by the pipeline's own functions, built once per session:

- `real_bundle`: a tiny real build (`precompute.build.build` on 20 mock galaxies, every model, a few epochs);
- `synthetic_bundle`: tests/synthetic_bundle.py (fake inputs and encoder, the pipeline's code after);
- `core_bundle`: what `python -m precompute prepare` writes for 6 mock galaxies (no model sections);
- `sed_bundle`: the seed-002 build of data/configs/sed.json (single spectra of the mock SED library), smaller;
- `survey_bundle`: 40 mock galaxies through preparation and the spectral-map stage with the build's default
  architecture and short training (the science checks of tests/test_spectral_maps.py and test_assign.py).

The dashboard tests run on both `real_bundle` and `synthetic_bundle` through the parametrized `bundle_path`.
"""
import os

# The session-wide build on the suite's critical path: the demo-size build alone is 340-400 s of one core
CRITICAL_GROUP = "trained"

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # Parallel workers share the cores: each worker (and the servers and Dask workers it starts) gets its share of
    # BLAS / OpenMP threads instead of every one spinning a thread per core. Set before numpy and torch load.
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, str(_threads))

import numpy as np  # after the thread counts
import pytest
from synthetic_bundle import write_synthetic_bundle
from tiny_builds import (
    SURVEY_GALAXIES,
    SURVEY_SEED,
    TINY_SYNTHETIC,
    sed_build_config,
    survey_config,
    tiny_build_config,
)

from explorer.data import ExplorerData
from explorer.state import SelectionState
from precompute import prepare, schema
from precompute.build import build
from precompute.bundle import Bundle, BundleWriter
from precompute.config import load_config
from precompute.spectral_maps import build_spectral_maps


@pytest.fixture(scope="session")
def real_bundle(tmp_path_factory):
    return build(tiny_build_config(), tmp_path_factory.mktemp("real") / "tiny-build")


@pytest.fixture(scope="session")
def sed_bundle(tmp_path_factory):
    return build(sed_build_config(), tmp_path_factory.mktemp("sed") / "sed-build")


@pytest.fixture(scope="session")
def synthetic_bundle(tmp_path_factory):
    return write_synthetic_bundle(tmp_path_factory.mktemp("synthetic") / "tiny", seed=5, **TINY_SYNTHETIC)


@pytest.fixture(scope="session")
def core_bundle(tmp_path_factory):
    config = load_config(seed=3, mock={"galaxies": 6})
    galaxies, _ = prepare.collect(prepare.prepare_mock(6, 3, "manga", config))
    path = tmp_path_factory.mktemp("core") / "core"
    with BundleWriter(path, config, seed=3) as writer:
        prepare.write_core(writer, galaxies, config)
    return path


@pytest.fixture(scope="session")
def survey_bundle(tmp_path_factory) -> Bundle:
    """Core + spectral-map sections for SURVEY_GALAXIES mock galaxies (what `python -m precompute build` writes
    before the embeddings)."""
    config = survey_config()
    galaxies, skipped = prepare.collect(prepare.prepare_mock(SURVEY_GALAXIES, SURVEY_SEED, "manga", config))
    assert skipped == 0
    path = tmp_path_factory.mktemp("spectral_maps") / "bundle"
    with BundleWriter(path, config, seed=SURVEY_SEED) as writer:
        table, bins = prepare.write_core(writer, galaxies, config)
        flux = np.concatenate([g.bin_flux for g in galaxies])
        ivar = np.concatenate([g.bin_ivar for g in galaxies])
        wave = prepare.rest_frame_grid(config["prepare"])
        table, bins, _ = build_spectral_maps(writer, table, bins, wave, flux, ivar, config)
        writer.write(schema.GALAXIES, table)
        writer.write(schema.BINS, bins)
    return Bundle(path)


@pytest.fixture(scope="session", params=["real", "synthetic"])
def bundle_path(request):
    """Each dashboard test runs on a tiny real build and on the synthetic bundle."""
    return request.getfixturevalue(f"{request.param}_bundle")


@pytest.fixture(scope="session")
def data(bundle_path):
    """One ExplorerData per bundle, as one dashboard process would load it."""
    return ExplorerData(bundle_path)


@pytest.fixture
def state(data):
    return SelectionState(data)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the test ids
def pytest_collection_modifyitems(items):
    """The slow ones (`pytest -m "not slow"` leaves them out): science checks on trained survey maps (the demo-size
    build, the 40-galaxy `survey_bundle`), browser tests (a server and a page load each, ~15 s) and the served-
    sessions tests (`served`: cycles of real sessions on a real Bokeh server, about a minute).

    Parallel runs (pytest-xdist, `--dist loadgroup`): the tests of a costly session-wide build go to one worker,
    which builds it once; xdist hands out the biggest groups first, so the builds start at once."""
    slow_fixtures = {"demo_build", "survey_bundle", "sed_bundle", "served"}
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if slow_fixtures & fixtures or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)
        group = build_group(item, fixtures)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


def build_group(item, fixtures: set[str]) -> str | None:
    """The session-wide build an item needs: "trained" (the demo build and the spectral-map and SED builds, each
    minutes), "real" (the tiny real build: the dashboard's unit and browser tests on it), else None."""
    params = item.callspec.params if hasattr(item, "callspec") else {}
    bundle = params.get("bundle_path") or params.get("test_bundle", "real" if "test_bundle" in fixtures else None)
    if fixtures & {"demo_build", "survey_bundle", "sed_bundle"} or bundle == "sed":
        return CRITICAL_GROUP
    if "real_bundle" in fixtures or bundle == "real":
        return "real"
    return None


def pytest_xdist_auto_num_workers(config):
    """One worker more than the cores (at most 3): the browser tests, servers and Dask clusters leave a core idle
    while they wait, which the extra worker fills; the workers outside the critical group give way to it."""
    return min((os.cpu_count() or 1) + 1, 3)


_gave_way = False


def pytest_runtest_setup(item):
    """Parallel runs: before its first test outside the critical group a worker lowers its own priority (nice +10),
    inherited by the servers, browsers and Dask workers it starts, so the critical group's builds keep a core."""
    global _gave_way
    if _gave_way or not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if any(marker.args[:1] == (CRITICAL_GROUP,) for marker in item.iter_markers("xdist_group")):
        return
    threads = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ["0"]  # Linux: nice per thread
    for thread in map(int, threads):
        try:
            os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + 10)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass
    _gave_way = True
