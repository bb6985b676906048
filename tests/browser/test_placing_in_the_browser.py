"""The "Place spectra" card in headless Chromium: files chosen in its file input are placed on the frozen maps (the
same nodes as `python -m precompute assign` gives), marked on the DESOM-1 map, listed in the placement table, a bad
file named with its problem, and the table downloadable as CSV. One page load."""
import re

import pandas as pd
import pytest
from panel_server import READY_JS
from tiny_builds import clearest_spectra, write_bundle_spectra

from explorer.colours import PLACED_RENDERER
from explorer.data import ExplorerData
from precompute import assign

pytestmark = pytest.mark.browser

# The data of the dots drawn over the DESOM-1 map (its figure found by title, the dots' renderer by name); null
# until some are drawn.
MARKS_JS = """(name) => {
  for (const view of Bokeh.index.all_views()) {
    const title = view.model.title;
    if (!view.frame || !title || typeof title.text !== "string" || !title.text.startsWith("DESOM-1")) continue;
    for (const renderer of view.model.renderers) {
      if (renderer.name !== name) continue;
      const data = renderer.data_source.data;
      const column = (key) => Array.from(data instanceof Map ? data.get(key) : data[key]);
      return column("node").length ? {node: column("node"), placed: column("placed")} : null;
    }
  }
  return null;
}"""


@pytest.fixture(scope="module")
def spectra_file(test_bundle, tmp_path_factory):
    """Bundle spectra of three DESOM-1 nodes as a rest-frame spectra set (as tests/test_assign.py writes them)."""
    bundle = ExplorerData(test_bundle).bundle
    rows = [int(members[0]) for members in clearest_spectra(bundle.bins, 3)]
    return write_bundle_spectra(bundle, rows, tmp_path_factory.mktemp("browser_uploads") / "three-spectra.fits")


def test_uploaded_spectra_are_marked_on_the_map_and_listed(page, dashboard_url, test_bundle, spectra_file,
                                                           artifacts):
    expected = assign.assign_files(test_bundle, [spectra_file])
    assert (expected["error"] == "").all() and len(expected) == 3
    errors = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(dashboard_url)
    page.wait_for_function(READY_JS, timeout=120_000)
    assert page.evaluate(MARKS_JS, PLACED_RENDERER) is None  # nothing placed yet

    page.locator(".place-upload input[type=file]").set_input_files([
        {"name": spectra_file.name, "mimeType": "application/fits", "buffer": spectra_file.read_bytes()},
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a spectrum\n"},
    ])
    marks = page.wait_for_function(MARKS_JS, arg=PLACED_RENDERER, timeout=120_000).json_value()
    counts = expected["node"].value_counts().sort_index()
    assert marks == {"node": counts.index.tolist(), "placed": counts.tolist()}

    # the table: one row per spectrum on assign's node, then the bad file; the problem is named on the page
    table = page.locator(".place-table")
    table.get_by_text("notes.txt").first.wait_for(timeout=30_000)
    sources = [t.strip() for t in table.locator(".tabulator-row [tabulator-field='source']").all_inner_texts()]
    nodes = [t.strip() for t in table.locator(".tabulator-row [tabulator-field='node']").all_inner_texts()]
    assert sources == [spectra_file.name] * 3 + ["notes.txt"]
    assert nodes == [str(n) for n in expected["node"]] + [""]
    assert page.locator(".place-problems").get_by_text("notes.txt: not a FITS file").first.is_visible()
    status = page.locator(".place-status").get_by_text(re.compile("spectra placed from")).first.inner_text()
    assert status.startswith("3 spectra placed from 1 of 2 files")
    page.locator(".place-spectra").screenshot(path=artifacts / "08-placed-spectra.png")
    page.locator(".desom1-map").screenshot(path=artifacts / "09-placed-on-desom1.png")

    with page.expect_download() as download:
        page.get_by_role("button", name="Download placements (CSV)").click()
    path = artifacts / "placed.csv"
    download.value.save_as(path)
    csv = pd.read_csv(path, keep_default_na=False, na_values=[""])
    assert list(csv["source"]) == sources and csv["node"].iloc[:3].astype(int).tolist() == expected["node"].tolist()
    assert not errors, f"console errors: {errors}"
