"""`panel serve app.py --args <bundle>` as a subprocess on a free port, for the browser tests: the session's
servers (conftest.py) and the tests that restart or kill a server of their own (test_discovery.py)."""
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 180  # seconds: a cold start imports Panel, HoloViews and the bundle on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(bundle, log, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start the server on `bundle` (output appended to the open file `log`) and wait until the page answers;
    returns the process and the page's URL."""
    port = port or free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "panel", "serve", "app.py", "--port", str(port), "--address", "127.0.0.1",
         "--allow-websocket-origin", f"127.0.0.1:{port}", "--warm", "--args", str(bundle)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "SAMP_HUB": ""},
    )
    url = f"http://127.0.0.1:{port}/app"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"panel serve exited with {server.returncode}; see {log.name}")
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                if response.status == 200:
                    return server, url
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(server)
            raise RuntimeError(f"panel serve did not answer on {url} within {START_TIMEOUT} s")
        time.sleep(0.5)


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@contextlib.contextmanager
def serving(bundle, log_path):
    """The server's URL while the block runs; the server is stopped after it."""
    with open(log_path, "w") as log:
        server, url = start(bundle, log)
        try:
            yield url
        finally:
            stop(server)
