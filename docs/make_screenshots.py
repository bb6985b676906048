"""The README's pictures, taken from the running dashboard: `python docs/make_screenshots.py [BUNDLE]`.

Serves `panel serve app.py --args BUNDLE` (default: the demo bundle) on 127.0.0.1, drives Debian's headless
Chromium with Playwright and writes docs/screenshot.png (the whole page) and one picture per seed figure:
docs/seed-clusters.png (seed 000 Fig. 7 for GMM, k = 4, its largest cluster selected), docs/seed-correlations.png
(Fig. 10), docs/seed-image-features.png (seed 004) and docs/seed-twins.png (Fig. 9: the survey against that cluster, twins switch on).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "browser")]
from explorer.data import DEFAULT_BUNDLE
from panel_server import CHROMIUM, CHROMIUM_ARGS, READY_JS, start, stop


def settle(page, ms: int = 1500) -> None:
    page.wait_for_timeout(ms)


def open_tab(page, name: str):
    figures = page.locator(".seed-figures")
    figures.get_by_text(name).first.click()
    figures.first.scroll_into_view_if_needed()
    settle(page)
    return figures


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", nargs="?", default=str(DEFAULT_BUNDLE))
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    server, url = start(Path(args.bundle), subprocess.DEVNULL)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1900})
            page.goto(url)
            page.wait_for_function(READY_JS, timeout=180_000)
            settle(page, 3000)
            page.screenshot(path=out / "screenshot.png")

            # Chromium paints only what the viewport reaches: tall enough for the tallest card (image-VAE features)
            page.set_viewport_size({"width": 1500, "height": 2700})
            page.get_by_role("button", name="Pin selection as A").click()  # A: the whole survey
            figures = open_tab(page, "Clusters")
            figures.get_by_role("button", name="GMM", exact=True).click()
            figures.get_by_text("GMM, k = ").first.wait_for()
            figures.get_by_role("button", name="4", exact=True).click()
            settle(page)
            clusters = figures.get_by_role("button", name=re.compile(r"^cluster \S+ · \d+ galaxies$")).all()
            biggest = max(clusters, key=lambda button: int(button.inner_text().split("·")[1].split()[0]))
            biggest.click()
            settle(page, 2500)
            figures.first.screenshot(path=out / "seed-clusters.png")

            page.locator(".twins-switch").click()  # B: the cluster; only galaxies with a mass/morphology twin
            settle(page, 2500)
            card = page.locator(".card", has=page.locator(".comparison-summary")).last
            card.scroll_into_view_if_needed()
            card.screenshot(path=out / "seed-twins.png")

            open_tab(page, "Embedding × properties").first.screenshot(path=out / "seed-correlations.png")
            open_tab(page, "Image-VAE features").first.screenshot(path=out / "seed-image-features.png")
            browser.close()
    finally:
        stop(server)
    print(f"screenshots of {args.bundle} written to {out}")


if __name__ == "__main__":
    main()
