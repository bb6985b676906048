"""Browser tests: `panel serve app.py` on a bundle the tests build, driven by Playwright in headless Chromium.

The Debian chromium package is used as it is (never `playwright install`); the server is a subprocess on a
free port. The page shows the tiny real build of tests/conftest.py; a test parametrized with
`@pytest.mark.parametrize("test_bundle", ["real", "synthetic"], indirect=True)` also runs on the synthetic bundle
(one server per bundle; "sed" is the seed-002 bundle of single spectra).
"""
from pathlib import Path

import panel_server
import pytest
from dashboard_page import open_dashboard

from explorer.data import ExplorerData

ARTIFACTS = panel_server.ROOT / "test-artifacts" / "browser"
VIEWPORT = {"width": 1500, "height": 1900}  # tall enough to show every view without scrolling


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not Path(panel_server.CHROMIUM).exists():
        pytest.skip(f"{panel_server.CHROMIUM} not installed (apt-get install chromium)")
    return {
        **browser_type_launch_args,
        "executable_path": panel_server.CHROMIUM,
        "headless": True,
        "args": panel_server.CHROMIUM_ARGS,
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": VIEWPORT, "accept_downloads": True}


@pytest.fixture
def context(context):
    """Navigation as patient as the page's own readiness waits: a server's first page pays its imports and the
    page build before the HTML is sent, more than Playwright's 30 s default on a loaded CI machine."""
    context.set_default_navigation_timeout(120_000)
    return context


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def test_bundle(request):
    """The bundle the server shows: the tiny real build unless a test asks for "synthetic" (indirect)."""
    return request.getfixturevalue(f"{getattr(request, 'param', 'real')}_bundle")


@pytest.fixture(scope="session")
def dashboard_url(test_bundle, artifacts):
    """Start `panel serve app.py --args <bundle>` and wait until the page answers (not warmed up: the first page
    pays the imports, which a warm-up would pay once more to build a page nobody sees)."""
    with panel_server.serving(test_bundle, artifacts / f"server-{Path(test_bundle).name}.log", warm=False) as url:
        yield url


@pytest.fixture(scope="module")
def bundle(test_bundle):
    """The bundle the server shows, read the dashboard's way, to compute what each step must show."""
    return ExplorerData(test_bundle)


@pytest.fixture
def dashboard(page, dashboard_url):
    """The page, loaded and rendered, with every console error and page error collected."""
    errors = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    open_dashboard(page, dashboard_url)
    page.errors = errors
    yield page
    assert not errors, f"console errors: {errors}"
