"""SOM hit maps through the real HoloViews → Bokeh rendering, read from the models the browser draws.

A galaxy selection (scatter brush, gallery, table) recolours the nodes with its hits and outlines none; nodes
picked on a map, and only those, are outlined, thinly, in a colour the hit map does not use.
"""
import numpy as np
import pytest
from bokeh.document import Document
from panel.io.state import set_curdoc

from explorer import som_grid
from explorer.colours import HITS_CMAP, PICKED_NODE_COLOUR


@pytest.fixture
def maps(data, state):
    """Both maps rendered into a Document, as `panel serve` renders them for a session; state changes run inside
    that Document, as they do on the server."""
    grids = som_grid.SomGrids(data, state)
    doc = Document()
    grids.view.server_doc(doc)
    with set_curdoc(doc):
        yield grids.maps


def fill_values(som_map) -> np.ndarray:
    """Node values in the column the markers' fill colour is mapped from: what the browser colours."""
    handles = som_map._handles[-1]
    column = handles["glyph_renderer"].glyph.fill_color.field
    return np.asarray(handles["source"].data[column], float)


def outlined(som_map) -> list[int]:
    return list(som_map._handles[-1]["source"].selected.indices)


def hit_values(hits: np.ndarray) -> np.ndarray:
    """The hit map's node values: the count, NaN (drawn grey) where the selection has no member."""
    return np.where(hits > 0, hits, np.nan)


def test_a_galaxy_selection_recolours_the_nodes_and_outlines_none(data, state, maps):
    picked = int(data.bin_node[0])
    state.select_nodes([picked])  # an outline to clear
    galaxies = np.arange(0, data.n_galaxies, 4)
    state.select_galaxies(galaxies, how="box on the scatter")
    spectra_hits = np.bincount(data.bin_node[np.isin(data.bin_galaxy, galaxies)],
                               minlength=data.desom1["rows"] * data.desom1["cols"])
    galaxy_hits = np.bincount(data.galaxy_node2[galaxies], minlength=data.desom2["rows"] * data.desom2["cols"])
    for level, hits in (("desom1", spectra_hits), ("desom2", galaxy_hits)):
        whole_survey = hit_values(som_grid.selection_hits(data, level, type(state)(data)))
        assert not np.array_equal(hit_values(hits), whole_survey, equal_nan=True)  # the selection changes colours
        assert np.array_equal(fill_values(maps[level]), hit_values(hits), equal_nan=True), level
        assert outlined(maps[level]) == [], level


def test_only_the_nodes_picked_on_a_map_are_outlined(data, state, maps):
    desom1, desom2 = maps["desom1"], maps["desom2"]
    k = int(data.bin_node[-1])
    state.select_nodes([k])
    assert outlined(desom1) == [k] and outlined(desom2) == []
    assert np.nansum(fill_values(desom1)) == np.count_nonzero(data.bin_node == k)  # the node holds every hit
    k2 = int(data.galaxy_node2[0])
    state.select_nodes2([k2])
    assert outlined(desom1) == [] and outlined(desom2) == [k2]


def rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])


def test_outlines_are_thin_and_unpicked_nodes_keep_their_look(maps):
    # far in RGB from every hit colour (the red selection colour is 58 from the hit map's magentas)
    assert min(np.linalg.norm(rgb(PICKED_NODE_COLOUR) - rgb(c)) for c in HITS_CMAP) > 100
    for som_map in maps.values():
        renderer = som_map._handles[-1]["glyph_renderer"]
        picked, unpicked, normal = renderer.selection_glyph, renderer.nonselection_glyph, renderer.glyph
        assert 1.5 <= picked.line_width <= 2 and picked.line_color == PICKED_NODE_COLOUR
        assert (unpicked.fill_alpha, unpicked.line_alpha) == (1.0, 1.0)  # not faded while another node is picked
        assert (unpicked.line_color, unpicked.line_width) == (normal.line_color, normal.line_width)
