"""The "Place spectra" card (explorer.place_spectra) on the tiny real build: uploaded files placed by assign's own
code on the frozen maps, marked on the SOM maps, listed with a CSV download, bad files named, the bundle untouched."""
from __future__ import annotations

import asyncio
import io
import os
import tempfile
import threading

import numpy as np
import pandas as pd
import param
import pytest
from bokeh.document import Document
from panel.io.state import set_curdoc
from tiny_builds import clearest_spectra, write_bundle_spectra

from explorer.colours import PLACED_RENDERER
from explorer.layout import create_app
from precompute import assign, schema
from precompute.bundle import Bundle
from precompute.mock.survey import write_mock_survey

NODES = 4  # the uploaded set holds one bundle spectrum from each of this many DESOM-1 nodes, and two from the first


def render(view) -> Document:
    doc = Document()
    view.server_doc(doc)
    return doc


def listing(folder) -> list[tuple[str, int, int]]:
    """Every file under `folder` and beside it (labels log, staging): path, size, modification time."""
    return sorted((os.path.relpath(os.path.join(root, name), os.path.dirname(folder)),
                   os.path.getsize(os.path.join(root, name)), os.stat(os.path.join(root, name)).st_mtime_ns)
                  for root, _, names in os.walk(os.path.dirname(folder)) for name in names)


@pytest.fixture(scope="module")
def spectra_file(real_bundle, tmp_path_factory):
    """The bundle's own prepared spectra as a rest-frame (z = 0) spectra set on a slightly wider grid, as
    tests/test_assign.py writes them: spectra of several nodes, so the marks are several dots."""
    bundle = Bundle(real_bundle)
    members = clearest_spectra(bundle.bins, NODES)
    rows = [int(m[0]) for m in members] + [int(members[0][1])]
    return write_bundle_spectra(bundle, rows, tmp_path_factory.mktemp("uploads") / "my-spectra.fits")


@pytest.fixture
def app_page(real_bundle, tmp_path, monkeypatch):
    """The page of one session, with its SOM maps rendered (the marks are drawn by the rendered plots) and the
    process's temporary files going to a folder the test looks into."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    # The upload's async callback runs to its end before the test goes on: without a served session Panel runs it
    # on this thread's event loop, which after the browser tests (Playwright's) is running, and leaves it pending
    monkeypatch.setattr(param.parameterized, "async_executor", run_to_completion)
    app_page = create_app(real_bundle)
    app_page.som_doc = render(app_page.dashboard.som.view)
    render(app_page.dashboard.place.view)
    return app_page


def run_to_completion(callback) -> None:
    """Run an async callback to its end on a loop of its own, in a thread (a loop may be running in this one)."""
    failed = []

    def run() -> None:
        try:
            asyncio.run(callback())
        except BaseException as err:  # re-raised in the test's thread
            failed.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


def marks(dashboard, level: str) -> dict:
    (source,) = dashboard.som.maps[level]._marks
    figure = dashboard.som.maps[level]._handles[0]["plot"]
    assert figure.select_one({"name": PLACED_RENDERER}).data_source is source
    return {key: np.asarray(value).tolist() for key, value in source.data.items()}


def test_uploads_are_placed_as_assign_places_them_marked_listed_and_exported(app_page, spectra_file, tmp_path,
                                                                            monkeypatch):
    dashboard = app_page.dashboard
    view, data, state = dashboard.place, dashboard.data, dashboard.state
    assert view is not None and "Choose files" in view.status.object and not view.table.visible
    expected = assign.assign_files(str(data.path), [spectra_file])  # the command line's code on the same file
    assert (expected["error"] == "").all() and expected["node"].nunique() == NODES
    before = listing(data.path)
    cache = assign.frozen_maps.cache_info()
    place, while_placing = view.place, []  # what the page shows while the files are being placed
    monkeypatch.setattr(view, "place", lambda files: while_placing.append(
        (view.status.object, view.busy.value, view.upload.disabled)) or place(files))

    view.upload.param.update(value=[spectra_file.read_bytes(), b"node,qe\n1,2\n"],
                             filename=[spectra_file.name, "notes.csv"])

    # one row per spectrum, on assign's nodes; then one row naming the bad file and its problem
    table = view.table.value
    assert view.table.visible and list(table["source"]) == [spectra_file.name] * len(expected) + ["notes.csv"]
    good = table.iloc[:len(expected)]
    assert list(good["node"]) == expected["node"].tolist() and list(good["spectrum"]) == list(range(len(expected)))
    assert list(good["second_node"]) == expected["second_node"].tolist()
    for column in ("qe", "recon_error", "coverage", "confidence"):
        np.testing.assert_allclose(good[column].to_numpy(float), expected[column].to_numpy(float), rtol=1e-6)
    assert (good["error"] == "").all()
    bad = table.iloc[-1]
    assert bad["node"] is None and bad["error"].startswith("notes.csv: ") and "not a FITS file" in bad["error"]
    assert view.problems.visible and "notes.csv: not a FITS file" in view.problems.object
    assert f"**{len(expected)} spectra placed** from 1 of 2 files" in view.status.object
    assert assign.frozen_maps.cache_info().misses == cache.misses  # the maps the process had loaded, not again
    assert while_placing == [(f"Placing {spectra_file.name}, notes.csv on the bundle's frozen maps …", True, True)]
    assert not view.busy.value and not view.upload.disabled

    # the marked nodes are the placed ones, with how many spectra each; a spectra set has no DESOM-2 node
    counts = expected["node"].value_counts().sort_index()
    assert marks(dashboard, "desom1")["node"] == counts.index.tolist()
    assert marks(dashboard, "desom1")["placed"] == counts.tolist() and max(counts) == 2
    assert marks(dashboard, "desom2")["node"] == []

    # the CSV is the table (and every column of assign's CSV, the uploaded name as source)
    csv = pd.read_csv(io.BytesIO(view._csv().getvalue()), keep_default_na=False, na_values=[""])
    assert list(csv.columns) == list(view.placed.columns) and set(assign.COLUMNS) <= set(csv.columns)
    assert list(csv["source"]) == list(table["source"]) and list(csv["error"].fillna("")) == list(table["error"])
    assert csv["node"].iloc[:-1].astype(int).tolist() == list(good["node"]) and np.isnan(csv["node"].iloc[-1])
    np.testing.assert_allclose(csv["qe"].iloc[:-1], good["qe"].to_numpy(float), rtol=1e-6)
    medians = [c for c in csv.columns if c.startswith("median_")]
    assert medians and np.allclose(csv[medians].iloc[:-1], expected[medians], equal_nan=True)

    # a row's tap selects its node; nothing was written into (or beside) the bundle, the uploads' folder is gone
    with set_curdoc(app_page.som_doc):  # as the served page: the maps' outlines follow the selection
        view._on_click(type("Click", (), {"row": 1})())
    assert state.nodes == [int(good["node"].iat[1])]
    assert listing(data.path) == before
    assert list((tmp_path / "tmp").iterdir()) == []

    view.clear.clicks += 1  # Clear takes the marks and the table away
    assert marks(dashboard, "desom1")["node"] == [] and state.placed is None and not view.table.visible


def test_a_cube_with_its_catalogue_is_marked_on_both_maps_and_the_fingerprint_umap(app_page, tmp_path_factory,
                                                                                    tmp_path):
    files = write_mock_survey(tmp_path_factory.mktemp("mock_cube"), 1, 99, "manga", progress=False)
    (cube,), catalogue = files["cubes"], files["catalogue"]
    dashboard = app_page.dashboard
    view = dashboard.place
    expected = assign.assign_files(str(dashboard.data.path), [cube], catalogue=catalogue)
    assert (expected["error"] == "").all() and len(expected) > 1
    node2 = int(expected["desom2_node"].iat[0])

    dashboard.state.embedding = "fingerprint"  # the embedding a new cube has: its UMAP dots it too
    render(dashboard.scatter.pane)
    view.catalogue.param.update(value=catalogue.read_bytes(), filename=catalogue.name)
    view.upload.param.update(value=[cube.read_bytes()], filename=[cube.name])

    table = view.table.value
    assert list(table["node"]) == expected["node"].tolist() and set(table["desom2_node"]) == {node2}
    (dots,) = dashboard.scatter._marks
    x_column, y_column = schema.umap_columns("fingerprint")
    np.testing.assert_allclose([dots.data["x"][0], dots.data["y"][0]],
                               expected[[x_column, y_column]].to_numpy(float)[0], rtol=1e-5)
    assert len(dots.data["x"]) == 1 and list(dots.data["name"]) == [expected["galaxy_id"].iat[0]]
    assert marks(dashboard, "desom2") == {**marks(dashboard, "desom2"), "node": [node2], "placed": [1]}
    assert sum(marks(dashboard, "desom1")["placed"]) == len(expected)
    assert list((tmp_path / "tmp").iterdir()) == []

    # without the catalogue the cube has no redshift: one row naming the file and what it needs
    view.catalogue.param.update(value=None, filename=None)
    view.upload.param.update(value=[cube.read_bytes()], filename=[cube.name])
    (error,) = view.table.value["error"]
    assert error.startswith(f"{cube.name}: ") and "redshift" in error and "catalogue" in error
    assert marks(dashboard, "desom1")["node"] == [] and marks(dashboard, "desom2")["node"] == []
    assert "**0 spectra placed** from 0 of 1 file" in view.status.object
