"""Each dashboard view as a function of (bundle, state), and its wiring, without a browser.

Views are rendered into a Bokeh Document (as the server does) so the tests see what the browser would get.
"""
import io
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.io.votable import parse
from bokeh.document import Document
from panel.io.state import set_curdoc

from explorer import comparison, gallery, prototype_spectra, samp, scatter, selection_table, som_grid
from explorer.colours import category_colours
from explorer.layout import create_app
from precompute import schema
from precompute.compare import typicality


def render(view):
    """Render a Panel object into a fresh Document, as `panel serve` does for a session."""
    doc = Document()
    view.server_doc(doc)
    return doc


# -- galaxy scatter ------------------------------------------------------------------------------------------------

def test_galaxy_points_numeric_and_categorical(data):
    embedding = next(iter(data.embeddings))
    points = scatter.galaxy_points(data, embedding, "log_ssfr")
    assert len(points) == data.n_galaxies
    assert np.allclose(points.dimension_values("umap_1"), data.umap(embedding)[:, 0])
    assert np.allclose(points.dimension_values("colour"), data.galaxies["log_ssfr"])
    assert points.get_dimension("colour").label.startswith("Specific SFR")
    categorical = scatter.galaxy_points(data, embedding, "morphology")
    cmap = categorical.opts.get("style").kwargs["cmap"]
    assert set(cmap) == set(data.galaxies["morphology"])  # a {category: colour} dict, every category present
    with pytest.raises(KeyError, match="cannot colour by"):
        scatter.galaxy_points(data, embedding, "galaxy_id")


def test_scatter_selection_round_trip(data, state):
    view = scatter.GalaxyScatter(data, state)
    doc = render(view.pane)
    source = view._sources[0]
    with set_curdoc(doc):
        view.selection.event(index=[4, 1])  # a box selection in the browser
    assert state.galaxies.tolist() == [1, 4] and "UMAP" in state.how
    with set_curdoc(doc):
        state.select_galaxies([7, 8, 9], how="elsewhere")
    assert list(source.selected.indices) == [7, 8, 9]  # drawn without rebuilding the plot
    with set_curdoc(doc):
        view.selection.event(index=[])  # a click on empty space keeps the selection
    assert state.galaxies.tolist() == [7, 8, 9] and list(source.selected.indices) == [7, 8, 9]


def test_colour_by_rebuilds_the_scatter(data, state):
    view = scatter.GalaxyScatter(data, state)
    render(view.pane)
    before = view.pane.object
    state.colour_by = "morphology"
    assert view.pane.object is not before
    assert view.pane.object.get_dimension("colour").label.startswith("morphology")


def test_spectra_plane_box_selects_spectra(data, state):
    view = scatter.SpectraScatter(data, state)
    render(view.view)
    x, y = view.x.value, view.y.value
    xs, ys = data.bins[x].to_numpy(), data.bins[y].to_numpy()
    box = (np.median(xs), np.median(ys), xs.max(), ys.max())
    view.bounds.event(bounds=box)
    inside = np.flatnonzero((xs >= box[0]) & (ys >= box[1]))
    assert np.array_equal(state.selected_spectra, inside)
    plot = scatter.spectra_plot(data, x, y, inside)
    assert len(plot.get(1)) == len(inside)  # the highlighted layer holds exactly the selected spectra


# -- SOM grids -------------------------------------------------------------------------------------------------

def test_hit_map_counts_selected_spectra(data, state):
    state.select_galaxies([0, 1, 2], how="t")
    element = som_grid.som_map(data, "desom1", som_grid.MODES[0], state.node_hits, state.colour_by)
    nodes = data.bins["desom1_node"].to_numpy()[data.bin_galaxy <= 2]
    expected = np.bincount(nodes, minlength=36).astype(float)
    expected[expected == 0] = np.nan
    assert np.array_equal(element.dimension_values("value"), expected, equal_nan=True)
    umatrix = som_grid.som_map(data, "desom1", som_grid.MODES[2], state.node_hits, state.colour_by)
    assert np.allclose(umatrix.dimension_values("value"), data.bundle.read(schema.DESOM1_UMATRIX).ravel())
    with pytest.raises(ValueError, match="unknown SOM colouring"):
        som_grid.som_map(data, "desom1", "rainbow", state.node_hits, state.colour_by)


def test_som_tap_selects_nodes_and_selection_recolours(data, state):
    grids = som_grid.SomGrids(data, state)
    doc = render(grids.view)
    desom1, desom2 = grids.maps["desom1"], grids.maps["desom2"]
    busiest = int(np.argmax(data.bundle.read(schema.DESOM1_HITS)))
    with set_curdoc(doc):
        desom1.tap.event(index=[busiest])
    assert state.nodes == [busiest]
    assert (data.bins["desom1_node"].to_numpy()[state.selected_spectra] == busiest).all()
    source = desom1._handles[0]["source"]
    assert source.selected.indices == [busiest]
    values = np.asarray(source.data["value"], float)
    assert values[busiest] == data.bundle.read(schema.DESOM1_HITS)[busiest] and np.isnan(np.delete(values, busiest)).all()
    with set_curdoc(doc):
        desom2.tap.event(index=[0])
    assert state.nodes2 == [0] and state.nodes == []
    assert desom2._handles[0]["plot"].title.text.startswith("DESOM-2")


def test_median_map_for_categories(data, state):
    element = som_grid.som_map(data, "desom2", som_grid.MODES[1], None, "morphology")
    values = element.dimension_values("value")
    assert set(values) <= set(data.galaxies["morphology"]) | {"n/a"}  # "n/a": a node without galaxies
    nodes = data.galaxies["desom2_node"].to_numpy()
    busiest = int(np.bincount(nodes).argmax())
    members = data.galaxies["morphology"].to_numpy()[nodes == busiest]
    counts = {m: (members == m).sum() for m in set(members)}
    assert counts[values[busiest]] == max(counts.values())


# -- prototype spectra -------------------------------------------------------------------------------------

def test_nodes_to_show():
    hits = np.array([0, 5, 9, 0, 2])
    assert prototype_spectra.nodes_to_show([], hits) == [2, 1, 4]
    assert prototype_spectra.nodes_to_show([], np.zeros(5, int)) == []
    assert prototype_spectra.nodes_to_show([3, 0], hits) == [3, 0]


def test_prototype_figure_shows_decoded_spectra_and_lines(data):
    node = int(np.argmax(data.bundle.read(schema.DESOM1_HITS)))
    plot = prototype_spectra.PrototypeFigure(data, [node])
    assert len(plot.slots) == prototype_spectra.MAX_NODES  # fixed slots; the unused ones are empty
    first, second = plot.slots[0].data, plot.slots[1].data
    assert np.allclose(first["prototype"], data.bundle.read(schema.DESOM1_PROTOTYPE_SPECTRA)[node], rtol=1e-6)
    assert np.allclose(first["p16"], data.bundle.read(schema.DESOM1_MEMBER_SPECTRA)[1, node], rtol=1e-6)
    assert np.allclose(first["p84"], data.bundle.read(schema.DESOM1_MEMBER_SPECTRA)[3, node], rtol=1e-6)
    assert np.isnan(second["prototype"]).all()
    assert {"Hα", "Hβ", "[OIII]", "Ca K"} <= set(plot.line_names.data["text"])  # all inside 3650–7000 Å
    assert plot.figure.title.text == "Prototype spectra of node ({}, {})".format(*divmod(node, 6))
    # the continuum is inside the plot, and the line names sit just above it
    assert plot.figure.y_range.end > np.nanpercentile(first["p50"], 99)
    assert np.all(np.asarray(plot.line_names.data["flux"]) < plot.figure.y_range.end)
    # close pairs get a row each, so their names do not print over each other
    offsets = dict(zip(plot.line_names.data["text"], plot.line_names.data["offset"]))
    assert offsets["Ca K"] != offsets["Ca H"] and offsets["Hα"] != offsets["[NII]"]
    assert offsets["Hβ"] == offsets["[OIII]"] == offsets["Hα"] == 0


def test_line_labels_closer_than_the_gap_take_the_next_free_row():
    assert prototype_spectra.label_rows([3934.8, 3969.6, 4102.9, 6564.6, 6585.3, 6725.0], 70) == [0, 1, 0, 0, 1, 0]
    assert prototype_spectra.label_rows([1.0, 2.0, 3.0, 10.0], 5) == [0, 1, 2, 0]


def test_distribution_curves_are_densities_like_the_survey_curve(data):
    node = int(np.argmax(data.bundle.read(schema.DESOM1_HITS)))
    plot = prototype_spectra.DistributionFigure(data, "log_mstar", [node])
    histograms = data.bundle.read(schema.DESOM1_NODE_HISTOGRAMS)
    edges, widths = histograms["galaxy.log_mstar__edges"], np.diff(histograms["galaxy.log_mstar__edges"])
    node_density = np.asarray(plot.slots[0].data["density"])
    survey = plot.figure.renderers[0].data_source.data  # the grey histogram of all spectra, drawn first
    survey_density = np.asarray(survey["top"])
    assert np.allclose(node_density, histograms["galaxy.log_mstar"][node] / widths)  # the stored fractions
    assert np.sum(node_density * widths) == pytest.approx(1.0, abs=1e-5)
    assert np.sum(survey_density * widths) == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(survey["left"], edges[:-1]) and np.allclose(survey["right"], edges[1:])
    assert np.isnan(plot.slots[1].data["density"]).all()
    categorical = prototype_spectra.DistributionFigure(data, "morphology", [node])
    fractions = np.asarray(categorical.slots[0].data["fraction"])
    members = data.galaxies["morphology"].to_numpy()[data.bin_galaxy[data.bin_node == node]]
    assert np.isclose(fractions.sum(), 1.0)
    assert np.isclose(fractions.max(), max(np.mean(members == m) for m in set(members)))
    assert list(categorical.figure.x_range.factors) == data.categories("morphology")


def test_prototype_view_refills_its_slots(data, state):
    view = prototype_spectra.PrototypeSpectra(data, state)
    render(view.view)
    sources = view.spectra.slots
    state.select_nodes([3, 4])
    assert view.shown.nodes == [3, 4]
    assert view.spectra.slots is sources  # the same sources, new columns
    assert np.allclose(sources[1].data["prototype"], data.bundle.read(schema.DESOM1_PROTOTYPE_SPECTRA)[4], rtol=1e-6)
    assert np.isnan(np.asarray(sources[2].data["prototype"], float)).all()
    assert view.spectra.figure.title.text == "Prototype spectra of node (0, 3), node (0, 4)"
    assert "node (0, 4)" in view.key.object
    distribution = view.distribution
    expected = prototype_spectra.node_distribution(data, 4, state.colour_by, distribution.edges)[1]
    assert np.allclose(distribution.slots[1].data[distribution.y], expected, equal_nan=True)
    state.colour_by = "morphology"  # other axes: a new figure in the same pane
    assert view.distribution_pane.object is view.distribution.figure and view.distribution.categorical
    state.clear()
    assert view.shown.nodes == prototype_spectra.nodes_to_show([], state.node_hits)


# -- gallery and galaxy detail ------------------------------------------------------------------------------

def test_gallery_pages(data, state):
    assert gallery.gallery_page(np.arange(30), 2, 12).tolist() == list(range(24, 30))
    assert gallery.gallery_page(np.arange(30), 9, 12).tolist() == list(range(24, 30))
    view = gallery.Gallery(data, state)
    render(view.view)
    state.select_galaxies([3, 5, 8], how="g")
    shown = [card["name"] for card in view.grid.cards]
    assert shown == data.galaxies["galaxy_id"].iloc[[3, 5, 8]].tolist()
    assert all(card["uri"].startswith("data:image/png;base64,") for card in view.grid.cards)
    assert "3 galaxies" in view.header.object
    view.grid.clicked = [1, 0]  # what the browser sends when the second id is pressed: galaxy 5 in the detail view
    assert state.focus == 5
    # a selection that empties the gallery reaches the page's model too (Panel failed on emptied lists of dicts)
    model = view.grid.get_root(Document())
    view.grid.show(data, [])
    assert view.grid.cards == [] and model.data.cards_json == "[]"


def test_bin_map_lights_up_brushed_nodes(data):
    g = 0
    image = gallery.bin_node_image(data, g)
    spaxels = data.bundle.read(schema.SPAXEL_BINS)[data.galaxies["galaxy_id"].iat[g]]
    assert image.shape == (*spaxels.shape, 3)
    assert np.all(image[spaxels < 0] == 1.0)  # outside the bins: white
    own = data.bins[data.bins["galaxy_index"] == g]
    node = int(own["desom1_node"].iloc[0])
    lit = gallery.bin_node_image(data, g, highlight=[node])
    in_node = np.isin(spaxels, own.loc[own["desom1_node"] == node, "bin_id"])
    assert np.allclose(lit[in_node], image[in_node])
    others = (spaxels >= 0) & ~in_node
    if others.any():
        assert np.all(lit[others] > image[others] - 1e-12) and not np.allclose(lit[others], image[others])


def test_detail_and_neighbours(data, state):
    embedding = next(iter(data.embeddings))
    near = gallery.neighbours(data, embedding, 2, k=4)
    assert [j for j, _ in near] == data.knn(embedding)[2, :4].tolist()
    view = gallery.GalaxyDetail(data, state)
    render(view.view)
    state.focus = 4
    assert data.galaxies["galaxy_id"].iat[4] in view.summary.object
    assert view.neighbours.cards[0]["name"] == data.galaxies["galaxy_id"].iat[int(data.knn(embedding)[4, 0])]
    assert view.neighbours.cards[0]["caption"] == f"d = {data.knn_distance(embedding)[4, 0]:.3f}"


# -- selection table and export -----------------------------------------------------------------------------

def test_table_shows_selection(data, state):
    view = selection_table.SelectionTable(data, state)
    render(view.view)
    state.select_galaxies([2, 6], how="two")
    assert view.table.value["galaxy_id"].tolist() == data.galaxies["galaxy_id"].iloc[[2, 6]].tolist()
    assert "2 galaxies selected" in view.count.object
    # the export buttons are drawn as the buttons they are (Panel's FileDownload drops its colour: panel#8653)
    assert {button.get_root().button_type for button in view.downloads} == {"primary"}


def test_csv_export_has_exactly_the_selection_with_provenance(data, state):
    state.select_galaxies([1, 4, 7], how="box on UMAP")
    text = selection_table.export_bytes(data, state, "csv").decode()
    table = pd.read_csv(io.StringIO(text), comment="#")
    assert table["galaxy_id"].tolist() == data.galaxies["galaxy_id"].iloc[[1, 4, 7]].tolist()
    assert np.allclose(table["log_mstar"], data.galaxies["log_mstar"].iloc[[1, 4, 7]])
    assert set(data.galaxies.columns) - {"thumbnail"} <= set(table.columns)
    assert data.bundle.id in text and data.bundle.manifest["config_hash"] in text and "box on UMAP" in text


def test_fits_and_votable_exports(data, state):
    state.select_galaxies([0, 3], how="x" * 100)  # long descriptions go to HISTORY cards
    with fits.open(io.BytesIO(selection_table.export_bytes(data, state, "fits"))) as hdus:
        assert hdus[1].header["BUNDLEID"] == data.bundle.id
        assert hdus[1].header["NSELECT"] == 2
        assert list(hdus[1].data["galaxy_id"]) == data.galaxies["galaxy_id"].iloc[[0, 3]].tolist()
        assert "x" * 20 in "".join(hdus[1].header["HISTORY"])
    votable = parse(io.BytesIO(selection_table.export_bytes(data, state, "vot")))
    infos = {info.name: info.value for info in votable.resources[0].infos}
    assert infos["bundle_id"] == data.bundle.id and infos["n_selected"] == "2"
    assert len(votable.get_first_table().array) == 2
    with pytest.raises(ValueError, match="unknown export format"):
        selection_table.export_bytes(data, state, "xlsx")


# -- population comparison --------------------------------------------------------------------------------------

def test_ks_comparison(data):
    embedding = next(iter(data.embeddings))
    everyone = np.arange(data.n_galaxies)
    same = comparison.compare(data, embedding, everyone, everyone)
    assert same["statistic"] == 0 and same["pvalue"] == pytest.approx(1.0)
    order = np.argsort(typicality(data.knn_distance(embedding)))
    apart = comparison.compare(data, embedding, order[:10], order[-10:])
    assert apart["statistic"] == 1.0 and apart["pvalue"] < 0.01
    assert np.isnan(comparison.compare(data, embedding, order[:1], order[-5:])["pvalue"])


def test_comparison_view(data, state):
    view = comparison.Comparison(data, state)
    render(view.view)
    assert view.plot.object is None
    state.select_galaxies(np.arange(10), how="A")
    view.pin.clicks += 1
    state.select_galaxies(np.arange(10, data.n_galaxies), how="B")
    assert "KS D =" in view.plot.object.opts.get().kwargs["title"]
    assert "10 galaxies" in view.summary.object and f"{data.n_galaxies - 10} galaxies" in view.summary.object


# -- SAMP -------------------------------------------------------------------------------------------------------

def test_samp_absent_without_hub(data, state, tmp_path, monkeypatch):
    monkeypatch.delenv("SAMP_HUB", raising=False)
    assert not samp.hub_running(environ={}, home=tmp_path)
    assert samp.hub_running(environ={"SAMP_HUB": "std-lockurl:file:///x"}, home=tmp_path)
    monkeypatch.setattr(samp, "hub_running", lambda: False)
    assert samp.samp_button(data, state) is None


def test_samp_sends_the_selection(data, state, tmp_path, monkeypatch):
    """A TOPCAT stand-in receives the selection as a VOTable; the sender stays registered (a hub drops a
    notification whose sender has already left) and registers again with a restarted hub."""
    from pyvo.samp import SAMPHubServer, SAMPIntegratedClient

    lock = tmp_path / "samp-lock"
    monkeypatch.setenv("SAMP_HUB", f"std-lockurl:{lock.as_uri()}")
    received = []

    def send_to_a_fresh_hub(rows):
        hub = SAMPHubServer(web_profile=False, lockfile=str(lock), pool_size=1)
        hub.start()
        receiver = SAMPIntegratedClient(name="topcat-stand-in")
        before = len(received)
        try:
            receiver.connect(pool_size=1)
            receiver.bind_receive_notification(
                "table.load.votable", lambda key, sender, mtype, params, extra: received.append(params))
            state.select_galaxies(rows, how="samp")
            widget = samp.samp_button(data, state)
            widget[0].clicks += 1
            for _ in range(600):  # up to 60 s on a loaded machine; ends at the notification
                if len(received) > before:
                    break
                time.sleep(0.1)
            names = [receiver.get_metadata(client).get("samp.name") for client in receiver.get_registered_clients()]
        finally:
            receiver.disconnect()
            hub.stop()
        assert len(received) == before + 1, f"the receiving client got no table.load.votable; page: {widget[1].object!r}"
        assert "Galaxy explorer" in names
        table = parse(received[-1]["url"].removeprefix("file://")).get_first_table().array
        assert list(table["galaxy_id"]) == data.galaxies["galaxy_id"].iloc[rows].tolist()

    try:
        send_to_a_fresh_hub([2, 3, 4])
        send_to_a_fresh_hub([5, 6])  # a restarted hub has never seen the sender
    finally:
        samp.SENDER.close()
    # every table sent stays readable while the server runs, in one folder of its own
    sent = [Path(params["url"].removeprefix("file://")) for params in received]
    assert len({path.parent for path in sent}) == 1 and all(path.is_file() for path in sent)


def test_samp_tables_are_removed_when_the_server_exits(tmp_path):
    """The folder of sent VOTables goes with the process that sent them (one per server, not one per send)."""
    script = ("from explorer import samp; print(samp.OUTBOX.write('a', b'<VOTABLE/>')); "
              "print(samp.OUTBOX.write('b', b'<VOTABLE/>'))")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    first, second = map(Path, run.stdout.split())
    assert first.parent == second.parent and first != second
    assert not first.parent.exists(), f"{first.parent} left behind after the process exited"


# -- the page ---------------------------------------------------------------------------------------------------

def test_create_app_builds_every_view(data):
    page = create_app(data.path)
    dashboard = page.dashboard
    assert dashboard.scatter and dashboard.som and dashboard.prototypes and dashboard.comparison
    assert category_colours("morphology", data.galaxies["morphology"])  # the categorical legend has colours


def test_create_app_hides_missing_sections(core_bundle):
    dashboard = create_app(core_bundle).dashboard
    assert dashboard.scatter is None and dashboard.som is None and dashboard.prototypes is None
    assert dashboard.comparison is None and dashboard.table is not None and dashboard.gallery is not None


def test_no_bundle_page_says_how_to_build_one(tmp_path):
    page = create_app(tmp_path / "missing")
    text = page.main[0].object
    assert not hasattr(page, "dashboard")
    assert "python -m precompute build" in text and str(tmp_path / "missing") in text
