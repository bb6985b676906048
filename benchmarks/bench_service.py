"""The dashboard as a service, in a real browser: concurrent pages, memory over open/close cycles, brush latency.

    python benchmarks/bench_service.py data/bundles/demo
    python benchmarks/bench_service.py data/bundles/demo --pages 1,10,20 --cycles 3 --cycle-pages 10 --brushes 50
    python benchmarks/bench_service.py data/bundles/demo --pages 10 --cycles 0 --server-args="--num-procs 2"

Serves `panel serve app.py --args BUNDLE` on 127.0.0.1 and drives headless Chromium (Debian's) with Playwright:
1. for each count in --pages, that many pages opened at once: time from navigation to the galaxy scatter drawn
   (min / median / max), and the CPU seconds the server and Chromium used meanwhile (where the time went);
2. --cycles times: --cycle-pages pages opened at once, closed, then server RSS --closed-wait (30) s later (the server discards a
   closed page's session after 5 s: `--unused-session-lifetime 5000`; Bokeh's default waits up to 32 s);
3. --brushes box selections on the UMAP scatter of one page, every fifth on empty space: the browser-perceived
   latency from mouse release to the page showing the new selection count (every view is updated in the same
   server message), and server RSS every 10 brushes; an empty box must keep the selection.
``--server-args``: more `panel serve` options (Panel's ``--num-procs N``, ``--num-threads N``), to measure what they
change; the server's CPU time is that of its process and every process it forked. Ends with the number of
tracebacks in the server log and one JSON line. Targets (issue 14): each of 20 pages
ready ≤ 10 s; RSS after the third cycle within 10 % of after the first; brush latency ≤ 400 ms median.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "browser")]

from panel_server import CHROMIUM, CHROMIUM_ARGS, FIGURE_JS, READY_JS, rss_mb, start as start_server, stop

VIEWPORT = {"width": 1500, "height": 1900}
TARGET_READY_S, TARGET_LATENCY_MS = 10.0, 400.0


def cpu_seconds(server_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the server and by every Chromium process: where a phase's time went."""
    import psutil

    def used(process):
        times = process.cpu_times()
        return times.user + times.system

    browser = 0.0
    for process in psutil.process_iter(["name"]):
        if "chrom" in (process.info["name"] or ""):
            with contextlib.suppress(psutil.Error):
                browser += used(process)
    server = psutil.Process(server_pid)
    forked = 0.0  # `--num-procs N`: the processes that serve the pages
    for process in server.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            forked += used(process)
    return {"server": used(server) + forked, "browser": browser}


async def open_pages(browser, url: str, n: int) -> tuple[list, list[float]]:
    """n pages navigated at once; each one's seconds from navigation to the scatter drawn."""
    async def one():
        page = await browser.new_page(viewport=VIEWPORT)
        start = time.perf_counter()
        await page.goto(url, timeout=900_000)
        await page.wait_for_function(READY_JS, timeout=900_000, polling=100)
        return page, time.perf_counter() - start
    opened = await asyncio.gather(*(one() for _ in range(n)))
    return [page for page, _ in opened], [seconds for _, seconds in opened]


def boxes(xy: np.ndarray, n: int, rng: np.random.Generator):
    """(lo, hi, galaxies inside) of n boxes in UMAP coordinates; every fifth on empty space (no galaxy inside)."""
    low, span = xy.min(axis=0), np.ptp(xy, axis=0)
    for i in range(n):
        for _ in range(100_000):
            if i % 5 == 4:
                lo = low + rng.uniform(0, 0.95, 2) * span
                hi = lo + 0.03 * span
            else:
                lo = np.quantile(xy, rng.uniform(0, 0.6, 2), axis=0).diagonal()
                hi = np.minimum(lo + rng.uniform(0.2, 0.5) * span, xy.max(axis=0))  # released inside the frame
            inside = int(((xy >= lo) & (xy <= hi)).all(axis=1).sum())
            # a galaxy within a pixel or two of an edge may fall either side once the box is drawn in pixels
            margin = 0.005 * span
            on_edge = (((xy >= lo - margin) & (xy <= hi + margin)).all(axis=1).sum()
                       - ((xy >= lo + margin) & (xy <= hi - margin)).all(axis=1).sum())
            if (inside == 0) == (i % 5 == 4) and on_edge == 0:
                yield lo, hi, inside
                break
        else:
            raise SystemExit("no box on empty space found: the UMAP scatter has no gap of 3 % of its size")


async def brush_latencies(page, xy: np.ndarray, n: int, pid: int, rng: np.random.Generator) -> dict:
    latencies, rss, kept = [], [], 0
    count = page.get_by_text(re.compile(r"^[\d,]+ galaxies selected — ")).first
    for i, (lo, hi, inside) in enumerate(boxes(xy, n, rng)):
        before = await count.inner_text()
        scatter = await page.evaluate(FIGURE_JS, ["Galaxies in", [[float(lo[0]), float(hi[1])], [float(hi[0]), float(lo[1])]]])
        (x0, y0), (x1, y1) = scatter["points"]
        await page.mouse.move(x0, y0)
        await page.mouse.down()
        await page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
        await page.mouse.move(x1, y1, steps=4)
        if inside and not before.startswith(f"{inside:,} galaxies selected"):
            expected = page.get_by_text(re.compile(rf"^{inside:,} galaxies selected — ")).first
            start = time.perf_counter()
            await page.mouse.up()
            await expected.wait_for(timeout=60_000)
            latencies.append(1e3 * (time.perf_counter() - start))
        else:
            await page.mouse.up()
            await page.wait_for_timeout(1000)  # the server's answer; an empty box keeps the selection
            kept += (await count.inner_text()) == before
        if (i + 1) % 10 == 0:
            rss.append(rss_mb(pid))
    return {"latencies_ms": latencies, "rss_mb": rss, "untimed": n - len(latencies), "unchanged": kept}


async def run(bundle: Path, pages: list[int], cycles: int, cycle_pages: int, closed_wait_s: float, brushes: int,
              log, server_args=()) -> dict:
    from playwright.async_api import async_playwright

    from explorer.data import ExplorerData

    data = ExplorerData(bundle)
    xy = np.asarray(data.umap(next(iter(data.embeddings))))
    # a running service: warmed up (--warm), closed sessions discarded after 5 s (Bokeh's default waits up to 32 s)
    server, url = start_server(bundle, log, extra_args=["--check-unused-sessions", "1000", "--unused-session-lifetime", "5000",
                                                            *server_args])
    result = {"bundle": str(bundle), "galaxies": data.n_galaxies, "ready_s": {}, "cycles": []}
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            for n in pages:
                before = cpu_seconds(server.pid)
                opened, seconds = await open_pages(browser, url, n)
                after = cpu_seconds(server.pid)
                result["ready_s"][n] = seconds
                print(f"{n:>3} pages at once: ready in min {min(seconds):.1f} s, median {np.median(seconds):.1f} s, "
                      f"max {max(seconds):.1f} s; CPU used meanwhile: server {after['server'] - before['server']:.1f} s, "
                      f"Chromium {after['browser'] - before['browser']:.1f} s", flush=True)
                for page in opened:
                    await page.close()
            for cycle in range(cycles):
                before = rss_mb(server.pid)
                opened, _ = await open_pages(browser, url, cycle_pages)
                with_open = rss_mb(server.pid)
                for page in opened:
                    await page.close()
                await asyncio.sleep(closed_wait_s)
                after = rss_mb(server.pid)
                result["cycles"].append({"before": before, "open": with_open, "after": after})
                print(f"cycle {cycle + 1}: server RSS {before:.0f} MB before, {with_open:.0f} MB with {cycle_pages} "
                      f"pages open, {after:.0f} MB {closed_wait_s:.0f} s after closing them", flush=True)
            page = (await open_pages(browser, url, 1))[0][0]
            result["brushes"] = await brush_latencies(page, xy, brushes, server.pid, np.random.default_rng(0))
            await browser.close()
    finally:
        stop(server)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--pages", default="1,10,20", help="numbers of pages opened at once")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--cycle-pages", type=int, default=10)
    parser.add_argument("--closed-wait", type=float, default=30.0, help="seconds from closing to reading RSS")
    parser.add_argument("--brushes", type=int, default=50)
    parser.add_argument("--server-args", default="", help='more `panel serve` options, e.g. "--num-procs 2"')
    args = parser.parse_args(argv)
    pages = [int(n) for n in args.pages.split(",")]
    print(f"dashboard service benchmark on {os.cpu_count()} CPU cores, bundle {args.bundle}"
          + (f", panel serve {args.server_args}" if args.server_args else ""), flush=True)
    with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        result = asyncio.run(run(args.bundle, pages, args.cycles, args.cycle_pages, args.closed_wait,
                                  args.brushes, log, shlex.split(args.server_args)))
        log.seek(0)
        tracebacks = log.read().count("Traceback")
    brushes = result["brushes"]
    latency = np.asarray(brushes["latencies_ms"])
    median, p95 = (float(np.median(latency)), float(np.percentile(latency, 95))) if latency.size else (None, None)
    if latency.size:  # --brushes 0: start-up and memory only
        print(f"{args.brushes} brushes: {len(latency)} timed, latency median {median:.0f} ms, "
              f"p95 {p95:.0f} ms; {brushes['untimed']} on empty space or the same galaxies, "
              f"{brushes['unchanged']} of them kept the selection; server RSS every 10: "
              + ", ".join(f"{r:.0f}" for r in brushes["rss_mb"]) + " MB")
    print(f"tracebacks in the server log: {tracebacks}")
    worst = max(result["ready_s"][max(pages)])
    cycles = result["cycles"]
    growth = (cycles[-1]["after"] - cycles[0]["after"]) / cycles[0]["after"] if len(cycles) > 1 else float("nan")
    verdicts = {f"{max(pages)} pages each ready ≤ {TARGET_READY_S:.0f} s": worst <= TARGET_READY_S,
                **({"RSS after the last cycle within 10 % of after the first": growth <= 0.10} if len(cycles) > 1
                   else {}),
                **({f"brush latency median ≤ {TARGET_LATENCY_MS:.0f} ms": median <= TARGET_LATENCY_MS} if latency.size
                   else {}),
                "no traceback": tracebacks == 0}
    for what, met in verdicts.items():
        print(f"  {'meets' if met else 'MISSES'}: {what}")
    print(json.dumps({"server_args": args.server_args, "pages": {n: [round(min(s), 1), round(float(np.median(s)), 1), round(max(s), 1)]
                                for n, s in result["ready_s"].items()},
                      "rss_after_cycles_mb": [round(c["after"]) for c in cycles], "rss_growth": round(growth, 3),
                      "latency_median_ms": None if median is None else round(median),
                      "latency_p95_ms": None if p95 is None else round(p95),
                      "tracebacks": tracebacks}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
