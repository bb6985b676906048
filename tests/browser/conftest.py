"""Browser tests: `panel serve app.py` on a bundle the tests build, driven by Playwright in headless Chromium.

The Debian chromium package is used as it is (never `playwright install`); the server is a subprocess on a
free port. The page shows the tiny real build of tests/conftest.py; a test parametrized with
`@pytest.mark.parametrize("test_bundle", ["real", "synthetic"], indirect=True)` also runs on the synthetic bundle
(one server per bundle).
"""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1500, "height": 1900}  # tall enough to show every view without scrolling


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "headless": True,
        "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": VIEWPORT, "accept_downloads": True}


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def test_bundle(request):
    """The bundle the server shows: the tiny real build unless a test asks for "synthetic" (indirect)."""
    return request.getfixturevalue(f"{getattr(request, 'param', 'real')}_bundle")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def dashboard_url(test_bundle, artifacts):
    """Start `panel serve app.py --args <bundle>` and wait until the page answers."""
    port = _free_port()
    log = open(artifacts / f"server-{Path(test_bundle).name}.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "panel", "serve", "app.py", "--port", str(port), "--address", "127.0.0.1",
         "--allow-websocket-origin", f"127.0.0.1:{port}", "--warm", "--args", str(test_bundle)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "SAMP_HUB": ""},
    )
    url = f"http://127.0.0.1:{port}/app"
    deadline = time.monotonic() + 180
    try:
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"panel serve exited with {server.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"panel serve did not answer on {url} within 180 s")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
