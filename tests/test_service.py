"""The dashboard as a service, in-process: sessions served by a real Bokeh server release everything when they
close, and a damaged bundle gives the "cannot open this bundle" page naming the file.
(The browser side — gestures, offline assets — is tests/browser/test_dashboard_service.py.)
"""
import asyncio
import gc
import logging
import shutil
import socket
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import panel as pn
import pytest
from bokeh.client import pull_session
from tornado.websocket import WebSocketClosedError

from explorer.layout import create_app
from explorer.session import quiet_closed_pages
from precompute import schema

SESSIONS_PER_CYCLE = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(dashboards: list[weakref.ref]) -> int:
    gc.collect()
    return sum(ref() is not None for ref in dashboards)


def _wait_until(condition, what: str, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {limit_s:.0f} s")
        time.sleep(0.2)


@pytest.fixture
def served(synthetic_bundle):
    """The app served in this process by a real Bokeh server that discards closed sessions within a second;
    yields (url, weak references to every Dashboard made, number of sessions destroyed so far)."""
    dashboards, destroyed = [], []

    def app():
        page = create_app(synthetic_bundle)
        dashboards.append(weakref.ref(page.dashboard))
        pn.state.on_session_destroyed(lambda _context: destroyed.append(1))
        return page

    port = _free_port()
    server = pn.serve({"app": app}, port=port, address="127.0.0.1", show=False, threaded=True,
                      websocket_origin=[f"127.0.0.1:{port}"], check_unused_sessions_milliseconds=200,
                      unused_session_lifetime_milliseconds=200)
    try:
        _wait_until(lambda: _listening(port), "the server listening")
        yield f"http://127.0.0.1:{port}/app", dashboards, destroyed
    finally:
        server.stop()


def test_closed_sessions_release_their_dashboards(served):
    url, dashboards, destroyed = served
    rss = []
    # Bokeh's client runs an event loop of its own: in a thread of its own, since pytest-playwright's sync API keeps
    # one running in the main thread for the rest of the session once a browser test has run
    with ThreadPoolExecutor(max_workers=1) as client:
        for cycle in range(3):
            sessions = client.submit(lambda: [pull_session(url=url) for _ in range(SESSIONS_PER_CYCLE)]).result()
            assert len(dashboards) == SESSIONS_PER_CYCLE * (cycle + 1)
            client.submit(lambda opened: [session.close() for session in opened], sessions).result()
            del sessions
            _wait_until(lambda: len(destroyed) == len(dashboards), "Bokeh destroying the closed sessions")
            # the server thread may still be finishing the destruction it has just reported
            _wait_until(lambda: _alive(dashboards) == 0, f"the {len(dashboards)} Dashboards of the closed sessions "
                                                         f"collected", limit_s=30)
            rss.append(_rss_mb())
    # after the first cycle has filled the per-process caches, memory comes back to where it was
    assert rss[2] - rss[0] < 0.1 * rss[0], f"server RSS after each open/close cycle: {rss} MB"


def test_truncated_galaxies_table_gives_the_cannot_open_page(synthetic_bundle, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(synthetic_bundle, damaged)
    table = damaged / schema.GALAXIES.path
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    page = create_app(damaged)
    text = page.main[0].object
    assert not hasattr(page, "dashboard")
    assert "Cannot open this bundle" in text and str(damaged) in text
    assert f"{schema.GALAXIES.path}: cannot be read" in text or f"{schema.GALAXIES.path} /" in text


def test_a_page_closed_mid_update_is_one_log_line_not_a_traceback(caplog):
    """Panel leaves a write to a closed page's websocket un-awaited; asyncio would log it as a traceback."""
    loop = asyncio.new_event_loop()
    seen = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context["message"]))
    try:
        quiet_closed_pages(loop)
        quiet_closed_pages(loop)  # every session calls it: installed once
        with caplog.at_level(logging.INFO, logger="explorer.session"):
            loop.call_exception_handler({"message": "Task exception was never retrieved",
                                         "exception": WebSocketClosedError()})
            loop.call_exception_handler({"message": "another error", "exception": ValueError("boom")})
    finally:
        loop.close()
    assert seen == ["another error"]  # anything else still reaches the handler that was there before
    assert [r.getMessage() for r in caplog.records] == ["a page closed while an update was being sent to it"]
