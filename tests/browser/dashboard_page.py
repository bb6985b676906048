"""How the browser tests read and drive the dashboard page: its figures (found by title through BokehJS), the
selection summary, brushes, and the galaxies a brush must select."""
import re

import numpy as np
from panel_server import DRAWN_JS, FIGURE_JS, READY_JS

COUNT = re.compile(r"galaxies selected — ")  # the selection summary, on the page once the views are built


def open_dashboard(page, url):
    """Load the dashboard and wait until the galaxy scatter is drawn, the selection summary is shown and every
    view has rendered."""
    page.goto(url)
    page.wait_for_function(READY_JS, timeout=120_000)
    page.get_by_text(COUNT).first.wait_for(timeout=60_000)
    page.wait_for_function(DRAWN_JS, timeout=60_000)


def figure(page, prefix, points=()):
    found = page.evaluate(FIGURE_JS, [prefix, [list(map(float, p)) for p in points]])
    assert found, f"no plot titled {prefix!r} on the page"
    return found


def count_text(page) -> str:
    return page.get_by_text(COUNT).first.inner_text()


def wait_for_change(page, read, before, timeout=30_000):
    """Poll `read()` until it differs from `before`; return the new value."""
    for _ in range(timeout // 250):
        now = read()
        if now != before:
            return now
        page.wait_for_timeout(250)
    raise AssertionError(f"still {before!r} after {timeout} ms")


def box_select(page, corners):
    (x0, y0), (x1, y1) = corners
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=5)
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()


def brushed_galaxies(data, embedding, lo, hi):
    xy = np.asarray(data.umap(embedding))
    inside = (xy[:, 0] >= lo[0]) & (xy[:, 0] <= hi[0]) & (xy[:, 1] >= lo[1]) & (xy[:, 1] <= hi[1])
    return np.flatnonzero(inside)
