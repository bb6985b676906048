"""Discovery in headless Chromium (issue 13): labels that survive a restart and a SIGKILL of the server, tagging a
SOM node and selecting the tag back, the ranked list re-ranking after a label, and the detail view's ranked line
residuals with the top line's maps.

Every test works on a linked copy of the tiny real build (a folder of symlinks to its files), so its labels file
(beside the copy) is its own and the other tests see the bundle unlabelled. The module's server runs on one copy;
the restart test starts and kills servers of its own (tests/browser/panel_server.py).
"""
import json
import re
from pathlib import Path

import numpy as np
import panel_server
import pytest
from dashboard_page import count_text, figure, open_dashboard, wait_for_change

from explorer.anomaly_explained import ranked_lines
from explorer.som_grid import node_xy
from precompute import schema
from precompute.bundle import Bundle
from precompute.labels import INTERESTING, labels_path

pytestmark = pytest.mark.browser
STATUS = re.compile(r"^Labelled ")


def linked_copy(bundle_path, path: Path) -> Path:
    """A bundle folder whose files are symlinks to another bundle's: same bundle, its own labels file."""
    path.mkdir(parents=True)
    for entry in Path(bundle_path).iterdir():
        (path / entry.name).symlink_to(entry)
    return path


@pytest.fixture(scope="module")
def test_bundle(real_bundle, tmp_path_factory):
    return linked_copy(real_bundle, tmp_path_factory.mktemp("discovery") / "tiny-build")


@pytest.fixture(scope="module")
def dashboard_url(test_bundle, artifacts):
    with panel_server.serving(test_bundle, artifacts / "server-discovery.log", warm=False) as url:
        yield url


def open_detail(page):
    page.get_by_text("Galaxy detail", exact=True).first.click()
    page.get_by_text(re.compile("^Your labels:")).first.wait_for(timeout=30_000)


def focus_labels(page) -> str:
    return page.get_by_text(re.compile("^Your labels:")).first.inner_text()


def tag_selection(page, tag: str) -> str:
    """Type a tag, press Tag selection, and wait for the page's acknowledgement; returns it."""
    page.get_by_placeholder("e.g. ring galaxies").fill(tag)
    page.get_by_placeholder("e.g. ring galaxies").press("Enter")
    page.wait_for_timeout(300)
    page.get_by_role("button", name="Tag selection").click()
    acknowledgement = page.get_by_text(re.compile(rf"^Labelled \d+ galaxies {re.escape(tag)} ")).first
    acknowledgement.wait_for(timeout=30_000)
    return acknowledgement.inner_text()


def wait_until(page, read, done, timeout=30_000):
    """Poll `read()` until `done(value)`; return the value."""
    for _ in range(timeout // 250):
        value = read()
        if done(value):
            return value
        page.wait_for_timeout(250)
    raise AssertionError(f"still {value!r} after {timeout} ms")


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_labels_survive_a_restart_and_a_sigkill(page, real_bundle, tmp_path, artifacts):
    copy = linked_copy(real_bundle, tmp_path / "tiny-build")
    built = Bundle(copy)
    n = len(built.galaxies)
    with open(artifacts / "server-discovery-restart.log", "w") as log:
        # label the galaxy of the detail view and tag the selection three times; every label is acknowledged on
        # the page before the server is SIGKILLed (no shutdown handler runs)
        server, url = panel_server.start(copy, log, warm=False)
        try:
            open_dashboard(page, url)
            open_detail(page)
            before = focus_labels(page)
            assert before.startswith("Your labels: unlabelled")
            page.get_by_role("button", name="★ Interesting").click()
            assert wait_for_change(page, lambda: focus_labels(page), before).startswith(f"Your labels: {INTERESTING}")
            acknowledged = []
            for i in range(3):
                status = tag_selection(page, f"kill-{i}")
                assert status.startswith(f"Labelled {n} galaxies kill-{i}")
                acknowledged.append(f"kill-{i}")
        finally:
            page.goto("about:blank")
            server.kill()
            server.wait()
        recorded = events(labels_path(copy))
        assert [e["label"] for e in recorded] == [INTERESTING, *acknowledged]
        assert all(e["bundle_id"] == built.id and e["author"] for e in recorded)
        # a new server on the same bundle: the page shows every label again
        server, url = panel_server.start(copy, log, warm=False)
        try:
            open_dashboard(page, url)
            open_detail(page)
            assert focus_labels(page) == f"Your labels: {INTERESTING} · tags: kill-0; kill-1; kill-2"
            page.screenshot(path=artifacts / "discovery-01-label-after-restart.png", full_page=True)
        finally:
            page.goto("about:blank")
            panel_server.stop(server)


def test_tag_a_som_node_select_it_back_and_undo(dashboard, bundle, artifacts):
    grid = bundle.desom2
    node = int(np.argmax(bundle.bundle.read(schema.DESOM2_HITS)))
    members = np.flatnonzero(bundle.galaxy_node2 == node)
    x, y = node_xy(grid)
    before = count_text(dashboard)
    (px, py), = figure(dashboard, "DESOM-2", [(x[node], y[node])])["points"]
    dashboard.mouse.click(px, py)
    assert wait_for_change(dashboard, lambda: count_text(dashboard), before).startswith(
        f"{len(members)} galaxies selected — DESOM-2 node")
    status = tag_selection(dashboard, "browser sample")
    assert status.startswith(f"Labelled {len(members)} galaxies browser sample (DESOM-2 node")
    before = count_text(dashboard)
    dashboard.get_by_role("button", name="Clear selection").click()
    wait_for_change(dashboard, lambda: count_text(dashboard), before)
    dashboard.locator("select", has=dashboard.locator("option", has_text="browser sample")).select_option(
        label="browser sample")
    before = count_text(dashboard)
    dashboard.get_by_role("button", name="Select galaxies with it").click()
    after = wait_for_change(dashboard, lambda: count_text(dashboard), before)
    assert after.startswith(f"{len(members)} galaxies selected — label browser sample")
    dashboard.locator(".discovery").first.screenshot(path=artifacts / "discovery-02-tag-selected-back.png")
    summary = dashboard.locator(".labels-summary li")
    assert f"browser sample: {len(members)}" in summary.all_inner_texts()
    dashboard.get_by_role("button", name="Undo my last label").click()
    wait_until(dashboard, summary.all_inner_texts, lambda texts: f"browser sample: {len(members)}" not in texts)


def what_next(page) -> list[str]:
    """Galaxy ids of the ranked list, best first: read in one step in the page (buttons read one by one can be
    replaced between two reads while the list redraws, and the next read then waits for a button that is gone)."""
    return page.locator(".what-next button.gallery-id").evaluate_all(
        "buttons => buttons.filter(b => b.offsetParent !== null).map(b => b.innerText)")


def test_the_ranked_list_changes_after_a_label(dashboard, bundle, artifacts):
    ranked = what_next(dashboard)
    assert len(ranked) == 12
    scores = bundle.galaxies.set_index("galaxy_id")["anomaly_score"]
    assert list(scores.loc[ranked]) == sorted(scores.loc[ranked], reverse=True)  # no relevance label yet
    dashboard.get_by_role("button", name=ranked[0]).first.click()  # open the top galaxy in the detail view
    open_detail(dashboard)
    dashboard.get_by_role("button", name="✗ Not interesting").click()
    after = wait_until(dashboard, lambda: what_next(dashboard), lambda ids: len(ids) == 12 and ranked[0] not in ids)
    assert after != ranked[1:13]  # reviewed, and galaxies like it moved down
    assert "from 1 labelled" in dashboard.locator(".what-next-header p").inner_text()
    dashboard.locator(".discovery").first.screenshot(path=artifacts / "discovery-03-ranked-after-label.png")


def test_the_detail_view_shows_the_ranked_line_residuals(dashboard, bundle, artifacts):
    open_detail(dashboard)
    lines = ranked_lines(bundle, 0)  # galaxy 0 is in the detail view until one is picked
    gid = bundle.galaxies["galaxy_id"].iat[0]
    dashboard.get_by_text(f"Why unusual: {gid}").first.wait_for(timeout=30_000)
    listed = [item.rsplit(": ", 1) for item in dashboard.locator(".line-residuals li").all_inner_texts()]
    assert [name for name, _ in listed] == [name for name, _ in lines[:len(listed)]] and len(listed) >= 3
    assert np.allclose([float(v) for _, v in listed], [v for _, v in lines[:len(listed)]], atol=6e-4)
    for kind in ("data", "model", "residual"):
        figure(dashboard, f"{lines[0][0]}: {kind}")  # the top line's maps, side by side
    figure(dashboard, "Line residuals, ranked")
    dashboard.locator(".line-residuals").first.scroll_into_view_if_needed()
    dashboard.screenshot(path=artifacts / "discovery-04-line-residuals.png", full_page=True)
