"""The dashboard's data layer and per-session selection state, on a tiny synthetic bundle (no browser)."""
import numpy as np
import pytest

from explorer.data import ExplorerData, column_kind, resolve_bundle_path
from explorer.state import SelectionState
from precompute.bundle import BundleError


def test_nothing_selected_means_whole_survey(data, state):
    assert state.galaxies is None and state.how == "whole survey"
    assert np.array_equal(state.selected, np.arange(data.n_galaxies))
    assert np.array_equal(state.selected_spectra, np.arange(data.n_bins))
    assert state.colour_by in data.colour_columns
    assert state.embedding in data.embeddings


def test_select_galaxies_gives_exactly_their_spectra(data, state):
    state.select_galaxies([5, 2, 2, 9], how="test")
    assert state.galaxies.tolist() == [2, 5, 9]
    owners = data.bins["galaxy_index"].to_numpy()
    assert np.array_equal(state.selected_spectra, np.flatnonzero(np.isin(owners, [2, 5, 9])))
    assert state.how == "test" and state.focus == 2
    assert state.selected_ids == data.galaxies["galaxy_id"].iloc[[2, 5, 9]].tolist()
    assert state.node_hits.sum() == len(state.selected_spectra)


def test_select_ids_and_bad_input(data, state):
    ids = data.galaxies["galaxy_id"].iloc[[1, 3]].tolist()
    state.select_ids(ids, how="by id")
    assert state.galaxies.tolist() == [1, 3]
    with pytest.raises(KeyError, match="not-a-galaxy"):
        state.select_ids(["not-a-galaxy"], how="x")
    with pytest.raises(IndexError, match="out of range"):
        state.select_galaxies([data.n_galaxies], how="x")


def test_select_spectra_selects_their_galaxies(data, state):
    spectra = np.array([0, 1, data.n_bins - 1])
    state.select_spectra(spectra, how="spectra")
    assert np.array_equal(state.selected_spectra, spectra)
    assert state.galaxies.tolist() == sorted(set(data.bin_galaxy[spectra].tolist()))


def test_select_desom1_nodes(data, state):
    nodes = data.bins["desom1_node"].value_counts().index[:2].tolist()
    state.select_nodes(nodes)
    in_nodes = np.flatnonzero(np.isin(data.bins["desom1_node"], nodes))
    assert np.array_equal(state.selected_spectra, in_nodes)
    assert state.galaxies.tolist() == np.unique(data.bin_galaxy[in_nodes]).tolist()
    assert state.nodes == sorted(nodes) and "DESOM-1" in state.how
    hits = state.node_hits
    assert set(np.flatnonzero(hits)) == set(nodes)


def test_select_desom2_nodes(data, state):
    node = int(data.galaxies["desom2_node"].iloc[0])
    state.select_nodes2([node])
    assert state.galaxies.tolist() == np.flatnonzero(data.galaxies["desom2_node"] == node).tolist()
    assert state.nodes2 == [node] and state.nodes == []


def test_clear_and_pin(data, state):
    state.select_galaxies([1, 2, 3], how="first")
    state.pin()
    state.select_galaxies([4, 5], how="second")
    assert state.pinned.tolist() == [1, 2, 3] and state.pinned_how == "first"
    state.clear()
    assert state.galaxies is None and state.nodes == [] and len(state.selected) == data.n_galaxies
    assert state.pinned.tolist() == [1, 2, 3]


def test_views_are_notified_once_per_selection(state):
    calls = []
    state.param.watch(lambda *events: calls.append(len(events)), ["galaxies", "spectra", "nodes", "how"])
    state.select_galaxies([1, 2], how="once")
    assert len(calls) == 1


def test_derived_arrays_follow_the_selection(state):
    state.select_galaxies([0], how="a")
    first = state.selected_spectra
    state.select_galaxies([1], how="b")
    assert not np.array_equal(first, state.selected_spectra)


def test_columns_and_derived_agreement(data):
    kinds = data.colour_columns
    assert kinds["log_mstar"] == "numeric" and kinds["morphology"] == "categorical" and kinds["quenched"] == "categorical"
    assert "galaxy_id" not in kinds and "thumbnail" not in kinds
    agreement = [c for c in data.galaxies if c.startswith("knn_agreement_")]
    assert len(agreement) == 1
    values = data.galaxies[agreement[0]]
    assert values.between(0, 1).all() and kinds[agreement[0]] == "numeric"
    assert column_kind(data.galaxies["galaxy_id"]) is None  # every value distinct: an identifier


def test_node_statistic_is_median_of_member_spectra(data):
    medians = data.node_statistic("log_mstar", "desom1")
    node = data.bins["desom1_node"].to_numpy()
    values = data.galaxies["log_mstar"].to_numpy()[data.bin_galaxy]
    k = int(node[0])
    assert medians[k] == pytest.approx(np.median(values[node == k]))
    empty = np.setdiff1d(np.arange(36), node)
    assert np.isnan(medians[empty]).all()


def test_bundle_path_resolution(tmp_path):
    assert resolve_bundle_path(["given"], {"GALAXY_EXPLORER_BUNDLE": "env"}).name == "given"
    assert resolve_bundle_path([], {"GALAXY_EXPLORER_BUNDLE": "env"}).name == "env"
    assert resolve_bundle_path([], {}).parts[-3:] == ("data", "bundles", "demo")
    with pytest.raises(BundleError, match="python -m precompute build"):
        ExplorerData(tmp_path / "nothing-here")


def test_bundle_without_optional_sections(core_bundle):
    data = ExplorerData(core_bundle)
    assert data.desom1 is None and data.desom2 is None and data.embeddings == {}
    state = SelectionState(data)
    state.select_galaxies([0, 1], how="core only")
    assert len(state.selected_spectra) == int(data.galaxies["n_bins"].iloc[:2].sum())


def test_dashboard_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, explorer.layout; assert 'torch' not in sys.modules, 'explorer imported torch'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
