"""The dashboard as a service in headless Chromium: every gesture safe (an empty brush between two real ones),
no request leaving 127.0.0.1 while several pages load, and a damaged bundle showing a page that names the file.
"""
import shutil
from urllib.parse import urlparse

import numpy as np
import panel_server
import pytest
from dashboard_page import COUNT, box_select, brushed_galaxies, count_text, figure
from panel_server import DRAWN_JS, READY_JS

from precompute import schema

pytestmark = pytest.mark.browser
PAGES_AT_ONCE = 3  # CDN requests showed only when several pages loaded together


def wait_for_count(page, n: int, timeout_ms: int = 30_000) -> str:
    """Wait until the selection table counts `n` galaxies; return its text."""
    for _ in range(timeout_ms // 250):
        text = count_text(page)
        if text.startswith(f"{n} galaxies selected"):
            return text
        page.wait_for_timeout(250)
    raise AssertionError(f"the table still says {text!r} after {timeout_ms} ms, not {n} galaxies")


def empty_box(xy: np.ndarray, cells: int = 8):
    """A box in the UMAP's bounding box with no galaxy in it (the emptiest of cells × cells tiles, shrunk)."""
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    step = (hi - lo) / cells
    for i in range(cells):
        for j in range(cells):
            a = lo + step * [i, j] + 0.2 * step
            b = a + 0.6 * step
            if not ((xy >= a) & (xy <= b)).all(axis=1).any():
                return a, b
    raise AssertionError("no empty tile in the UMAP plane")


def test_brush_then_empty_brush_then_brush_selects_the_last(dashboard, bundle, artifacts):
    embedding = next(iter(bundle.embeddings))
    xy = np.asarray(bundle.umap(embedding))
    low, middle, high = xy.min(axis=0) - 0.01, np.median(xy, axis=0), xy.max(axis=0) + 0.01
    first_box = (low, middle)
    first = brushed_galaxies(bundle, embedding, *first_box)
    # the last box must select a different number of galaxies, so the count tells which brush won
    last_box = next(box for box in ((middle, high), (low, [high[0], middle[1]]), (low, [middle[0], high[1]]))
                    if 0 < len(brushed_galaxies(bundle, embedding, *box)) != len(first))
    boxes = [first_box, last_box]
    last = brushed_galaxies(bundle, embedding, *last_box)
    assert 0 < len(first) < bundle.n_galaxies and 0 < len(last) < bundle.n_galaxies

    def brush(lo, hi):
        box_select(dashboard, figure(dashboard, "Galaxies in", [(lo[0], hi[1]), (hi[0], lo[1])])["points"])

    brush(*boxes[0])
    wait_for_count(dashboard, len(first))
    brush(*empty_box(xy))
    dashboard.wait_for_timeout(1500)  # the server's answer to the empty box
    assert count_text(dashboard).startswith(f"{len(first)} galaxies selected")  # an empty box keeps the selection
    brush(*boxes[1])
    assert wait_for_count(dashboard, len(last)).startswith(f"{len(last)} galaxies selected")
    dashboard.screenshot(path=artifacts / "10-brush-empty-brush.png", full_page=True)
    log = (artifacts / f"server-{bundle.path.name}.log").read_text()
    assert "_pending_writes" not in log and "Traceback" not in log, log[-3000:]


def test_no_request_leaves_the_server(context, dashboard_url, bundle, artifacts):
    """Several pages load at once and brush once each; every request goes to the dashboard's own server."""
    requests, errors = [], []
    context.on("request", lambda request: requests.append(request.url))
    context.on("requestfailed", lambda request: errors.append(f"{request.url}: {request.failure}"))
    pages = [context.new_page() for _ in range(PAGES_AT_ONCE)]
    for page in pages:
        page.goto(dashboard_url, wait_until="commit")
    embedding = next(iter(bundle.embeddings))
    xy = np.asarray(bundle.umap(embedding))
    lo, hi = xy.min(axis=0) - 0.01, np.median(xy, axis=0)
    for page in pages:
        page.wait_for_function(READY_JS, timeout=180_000)
        page.get_by_text(COUNT).first.wait_for(timeout=120_000)
        page.wait_for_function(DRAWN_JS, timeout=120_000)
        page.bring_to_front()  # the mouse goes to the page in front
        box_select(page, figure(page, "Galaxies in", [(lo[0], hi[1]), (hi[0], lo[1])])["points"])
        wait_for_count(page, len(brushed_galaxies(bundle, embedding, lo, hi)), timeout_ms=60_000)
    pages[0].screenshot(path=artifacts / "11-offline.png", full_page=True)
    server = urlparse(dashboard_url).netloc
    outside = sorted({url for url in requests if urlparse(url).scheme in ("http", "https", "ws", "wss")
                      and urlparse(url).netloc != server})
    assert not outside, f"{len(outside)} requests left {server}: {outside[:10]}"
    assert not errors, f"failed requests: {errors[:10]}"


def test_a_session_recreated_after_it_expired_loads_nothing_from_outside(page, real_bundle, artifacts):
    """A page whose websocket arrives after its session expired (slow pages on a busy server) gets a session Bokeh
    creates again without an HTML page; Panel left that session's stylesheets on its CDN (10 requests off the
    machine) until create_app set the session's asset URL itself (explorer.layout.serve_assets_locally)."""
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    expire_at_once = ["--check-unused-sessions", "100", "--unused-session-lifetime", "100"]
    with panel_server.serving(real_bundle, artifacts / "server-expired-sessions.log", extra_args=expire_at_once) as url:
        page.goto(url, wait_until="commit")
        page.wait_for_function(READY_JS, timeout=180_000)
        page.wait_for_function(DRAWN_JS, timeout=120_000)  # every view rendered: its stylesheets requested
    server = urlparse(url).netloc
    outside = sorted({u for u in requests if urlparse(u).scheme in ("http", "https") and urlparse(u).netloc != server})
    assert not outside, f"{len(outside)} requests left {server}: {outside[:5]}"
    assert any(urlparse(u).path.endswith(".css") for u in requests), "the page loaded no stylesheet at all"


def test_truncated_galaxies_table_shows_a_page_naming_the_file(page, synthetic_bundle, tmp_path, artifacts):
    damaged = tmp_path / "damaged"
    shutil.copytree(synthetic_bundle, damaged)
    table = damaged / schema.GALAXIES.path
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    with panel_server.serving(damaged, artifacts / "server-damaged.log") as url:
        page.goto(url)
        page.get_by_role("heading", name="Cannot open this bundle").wait_for(timeout=120_000)
        text = "\n".join(page.locator(".bundle-error pre").all_inner_texts())  # the error and validate's lines
        page.screenshot(path=artifacts / "12-damaged-bundle.png", full_page=True)
    assert f"{schema.GALAXIES.path}: cannot be read" in text or f"{schema.GALAXIES.path} /" in text, text
