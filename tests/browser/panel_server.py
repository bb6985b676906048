"""`panel serve app.py --args <bundle>` as a subprocess on a free port, and how to know a page is drawn.

One place for the browser tests (conftest.py, and the tests that restart or kill a server of their own), the
benchmarks (bench_dashboard, bench_service) and docs/make_screenshots.py.
"""
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"  # Debian's package, used as it is (never `playwright install`)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
START_TIMEOUT = 180  # seconds: a cold start imports Panel, HoloViews and the bundle on a busy 2-core machine
# The page is drawn once the galaxy scatter ("Galaxies in <embedding> UMAP") has a view in BokehJS.
READY_JS = """() => window.Bokeh && Bokeh.index && [...Bokeh.index.all_views()].some(
  v => v.model.title && typeof v.model.title.text === "string" && v.model.title.text.startsWith("Galaxies in"))"""
# Every root of the page's document has rendered once (BokehJS's "document idle", as the DocumentReady event).
DRAWN_JS = "() => Bokeh.documents.length > 0 && Bokeh.documents.every(d => d.is_idle)"
# A figure found by the start of its title: its frame on the page, data → page coordinates, colour mappers.
FIGURE_JS = """([prefix, points]) => {
  for (const view of Bokeh.index.all_views()) {
    const title = view.model.title;
    if (!view.frame || !title || typeof title.text !== "string" || !title.text.startsWith(prefix)) continue;
    const rect = view.canvas_view.events_el.getBoundingClientRect();
    const frame = view.frame;
    return {
      title: title.text,
      points: points.map(([x, y]) => [rect.left + frame.x_scale.compute(x), rect.top + frame.y_scale.compute(y)]),
      mappers: view.model.renderers.map(r => (r.glyph && r.glyph.fill_color && r.glyph.fill_color.transform)
                                             ? r.glyph.fill_color.transform.type : null),
    };
  }
  return null;
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(bundle, log, port: int | None = None, warm: bool = True, extra_args=()) -> tuple[subprocess.Popen, str]:
    """Start the server on `bundle` (output to the open file `log`, or subprocess.DEVNULL) and wait until it
    listens; returns the process and the page's URL. `warm`: the app runs once before the server listens
    (`--warm`), so the first page does not pay the imports; a benchmark of the cold first page passes False."""
    port = port or free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "panel", "serve", "app.py", "--port", str(port), "--address", "127.0.0.1",
         "--allow-websocket-origin", f"127.0.0.1:{port}", "--liveness", *(["--warm"] if warm else []),
         "--plugins", "explorer.serve_thumbnails",
         *extra_args, "--args", str(bundle)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "SAMP_HUB": ""},
    )
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"panel serve exited with {server.returncode}; see {getattr(log, 'name', 'its log')}")
        try:  # /liveness answers once Tornado listens, without opening a session of the app
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/liveness", timeout=10):
                return server, f"http://127.0.0.1:{port}/app"
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(server)
            raise RuntimeError(f"panel serve did not answer on port {port} within {START_TIMEOUT} s")
        time.sleep(0.2)


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@contextlib.contextmanager
def serving(bundle, log_path, **options):
    """The server's URL while the block runs; the server is stopped after it."""
    with open(log_path, "w") as log:
        server, url = start(bundle, log, **options)
        try:
            yield url
        finally:
            stop(server)


def rss_mb(pid: int) -> float:
    """Resident memory of a process (the server), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
