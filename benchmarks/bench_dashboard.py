"""Dashboard benchmark: server-side time from a selection change to every view updated, page first-render time,
and memory per browser session, at the demo size and at 10,000 galaxies / 1,000,000 binned spectra.

    python benchmarks/bench_dashboard.py                 # both sizes (writes missing synthetic bundles first)
    python benchmarks/bench_dashboard.py --sizes demo --repeats 20 --no-browser
    python benchmarks/bench_dashboard.py --sizes /tmp/scale/build-2560   # a real bundle (e.g. bench_scale --keep)

Selection latency is measured in-process, exactly as the server runs a browser event: the session's Document is
current, the state changes, every view updates its Bokeh models, and the resulting PATCH-DOC message is
serialised. Wall time depends on what else runs on the machine, so CPU time is printed beside it.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from precompute import schema

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "browser")]

from panel_server import CHROMIUM, CHROMIUM_ARGS, READY_JS, rss_mb, start as start_server, stop  # tests/browser
from synthetic_bundle import write_synthetic_bundle  # tests/synthetic_bundle.py

SIZES = {
    # name: (folder, galaxies, mean binned spectra per galaxy, log10 wavelength step, image size)
    "demo": (ROOT / "data" / "bundles" / "bench-demo", 160, 50, 2e-4, 64),
    "big": (ROOT / "data" / "bundles" / "bench-1m", 10_000, 100, 2e-3, 32),
}
TARGET_MS = 250


def ensure_bundle(size: str) -> Path:
    """The bundle of a named synthetic size (written when missing), or a bundle folder given as it is."""
    if size not in SIZES:
        if not (Path(size) / "manifest.json").is_file():
            raise SystemExit(f"--sizes: {size!r} is neither one of {', '.join(SIZES)} nor a bundle folder")
        return Path(size)
    path, n_galaxies, per_galaxy, dlog, image = SIZES[size]
    if not (path / "manifest.json").exists():
        start = time.perf_counter()
        write_synthetic_bundle(path, n_galaxies, per_galaxy, seed=0, dlog10_wave=dlog, image_size=image, progress=True)
        print(f"  wrote {path} in {time.perf_counter() - start:.0f} s")
    return path


def selections(data, rng, n: int):
    """A mix of what astronomers do: UMAP boxes, DESOM-1 taps, DESOM-2 taps, spectra boxes."""
    embedding = next(iter(data.embeddings))
    xy = np.asarray(data.umap(embedding))
    hits = np.asarray(data.bundle.read(schema.DESOM1_HITS))
    populated = np.flatnonzero(hits)
    for i in range(n):
        kind = i % 4
        if kind == 0:
            lo = np.quantile(xy, rng.uniform(0, 0.6, 2), axis=0).diagonal()
            hi = lo + rng.uniform(0.2, 0.5) * np.ptp(xy, axis=0)
            inside = np.flatnonzero(((xy >= lo) & (xy <= hi)).all(axis=1))
            yield "UMAP box", lambda s, g=inside: s.select_galaxies(g, how="box")
        elif kind == 1:
            yield "DESOM-1 tap", lambda s, k=int(rng.choice(populated)): s.select_nodes([k])
        elif kind == 2:
            k2 = int(rng.choice(np.unique(data.galaxy_node2)))
            yield "DESOM-2 tap", lambda s, k=k2: s.select_nodes2([k])
        else:
            radius = data.bins["radius_re"].to_numpy()
            lo = rng.uniform(0, np.quantile(radius, 0.7))
            spectra = np.flatnonzero((radius >= lo) & (radius <= lo + 0.3))
            yield "spectra box", lambda s, sp=spectra: s.select_spectra(sp, how="box on spectra")


def bench_selection(path: Path, repeats: int) -> dict:
    from bokeh.core.json_encoder import serialize_json
    from bokeh.document import Document
    from bokeh.protocol import Protocol
    from panel.io.state import set_curdoc

    from explorer.layout import create_app

    page = create_app(path)
    doc = Document()
    page.server_doc(doc)
    document_mb = len(serialize_json(doc.to_json())) / 1e6  # what a new page downloads before it can draw
    state = page.dashboard.state
    protocol = Protocol()
    rng = np.random.default_rng(0)
    walls, cpus, kinds, sizes = [], [], [], []
    with set_curdoc(doc):
        for i, (kind, select) in enumerate(selections(page.dashboard.data, rng, repeats + 4)):
            doc.hold("combine")  # collect the model changes as the server does for a connected session
            wall, cpu = time.perf_counter(), time.process_time()
            select(state)
            events = doc.callbacks._held_events
            message = protocol.create("PATCH-DOC", events)  # what the server serialises and sends
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            sizes.append(len(message.content_json))
            doc.callbacks._held_events = []
            doc.unhold()
            if i >= 4:  # the first selections fill per-process caches (colour maps, node statistics)
                walls.append(wall)
                cpus.append(cpu)
                kinds.append(kind)
    walls, cpus = np.array(walls) * 1e3, np.array(cpus) * 1e3
    by_kind = {k: float(np.median(walls[np.array(kinds) == k])) for k in dict.fromkeys(kinds)}
    return {"wall_median": float(np.median(walls)), "wall_p90": float(np.percentile(walls, 90)),
            "cpu_median": float(np.median(cpus)), "by_kind": by_kind, "patch_kb": float(np.median(sizes)) / 1e3,
            "document_mb": document_mb}


def bench_browser(path: Path, sessions: int) -> dict:
    """First-render time of a cold server (loads the bundle) and of later sessions; memory per open session."""
    from playwright.sync_api import sync_playwright

    server, url = start_server(path, subprocess.DEVNULL, warm=False)  # cold: the first page loads the bundle
    try:
        idle_rss = rss_mb(server.pid)
        renders, rss = [], []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            pages = []
            for _ in range(sessions):
                page = browser.new_page(viewport={"width": 1500, "height": 1900})
                start = time.perf_counter()
                page.goto(url, timeout=600_000)
                page.wait_for_function(READY_JS, timeout=600_000)
                renders.append(time.perf_counter() - start)
                pages.append(page)
                time.sleep(1.0)  # let the session settle before reading memory
                rss.append(rss_mb(server.pid))
            browser.close()
    finally:
        stop(server)
    per_session = np.diff(rss)
    return {"cold_render": renders[0], "warm_render": float(np.median(renders[1:])) if sessions > 1 else np.nan,
            "idle_rss": idle_rss, "first_session_rss": rss[0],
            "per_session_mb": float(np.median(per_session)) if len(per_session) else np.nan}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="demo,big", help="comma-separated: demo, big or bundle folders")
    parser.add_argument("--repeats", type=int, default=40, help="selection changes timed per size")
    parser.add_argument("--sessions", type=int, default=4, help="browser sessions opened per size")
    parser.add_argument("--no-browser", action="store_true", help="skip first-render and memory figures")
    parser.add_argument("--inline-thumbnails", action="store_true",
                        help="measure the page without the thumbnail route (panel serve without --plugins)")
    args = parser.parse_args(argv)
    if not args.inline_thumbnails:  # as the served page: `panel serve --plugins explorer.serve_thumbnails`
        import explorer.serve_thumbnails  # noqa: F401
    thumbnails = "inline" if args.inline_thumbnails else "as URLs"
    print(f"dashboard benchmark on {os.cpu_count()} CPU cores (target: selection → all views ≤ {TARGET_MS} ms median)")
    for size in args.sizes.split(","):
        path = ensure_bundle(size)
        from explorer.data import ExplorerData

        data = ExplorerData(path)
        print(f"\n[{size}] {data.n_galaxies:,} galaxies, {data.n_bins:,} binned spectra ({path})")
        sel = bench_selection(path, args.repeats)
        verdict = "meets" if sel["wall_median"] <= TARGET_MS else "misses"
        print(f"  selection → all views updated: median {sel['wall_median']:.0f} ms wall "
              f"({sel['cpu_median']:.0f} ms CPU), p90 {sel['wall_p90']:.0f} ms — {verdict} the {TARGET_MS} ms target")
        print("  by kind (median wall): " + ", ".join(f"{k} {v:.0f} ms" for k, v in sel["by_kind"].items()))
        print(f"  patch sent to the browser: median {sel['patch_kb']:.1f} kB; a new page's document "
              f"{sel['document_mb']:.1f} MB (hover thumbnails {thumbnails})")
        if not args.no_browser:
            web = bench_browser(path, args.sessions)
            print(f"  page first render: {web['cold_render']:.1f} s on a cold server (imports + bundle load), "
                  f"{web['warm_render']:.1f} s for later sessions")
            print(f"  server memory: {web['idle_rss']:.0f} MB idle, {web['first_session_rss']:.0f} MB with one "
                  f"session, +{web['per_session_mb']:.0f} MB per further session")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
