"""Grid-page benchmark: one page of the app's paged grid against one giant grid of the whole run.

    . .venv/bin/activate
    python bench/grid_page.py                      # 10,000 images: 50 checkpoints x 50 prompts x 4 seeds
    python bench/grid_page.py --images 2000 --no-http
    python bench/grid_page.py --images 100000 --no-giant-images   # 159 x 158 x 4

It builds a store with `--images` sampled cells (rows inserted in bulk straight into the tables the grid
reads; each a 64x64 PNG with an infotext chunk, written the way the sampler writes them, or with
`--no-giant-images` only the first page's PNGs, for 100,000) and times:

  page builders      the first page (prompts as rows, checkpoints as columns, `--rows-per-page` rows) as a
                     `GridPage`, cold (first call on a freshly opened store) and warm (median): the Python
                     builder `grid_page` was before (bench/grid_before.py, reads every row of the run),
                     `grid_page` reading the run (axis values and coded cells) each call, and `grid_page`
                     with the app's `AxesCache` (the run read once, each page pinned and paged in memory)
  page (cold/warm)   `grid_html` (the page with the cache, and its HTML) as the app serves it
  page over HTTP     the app served by uvicorn: the page through Gradio's API (`/gradio_api/call/grid`, with
                     the tab's arguments: run, rows, columns, one filter per axis, the page from 1), then every
                     image it shows through `/image/...`, 6 at a time like a browser
  giant HTML         what a user gets without paging: one HTML page with every image of the run as a
                     thumbnail (the same markup per image as a grid cell); over HTTP, all its images
  giant sheet        A1111's X/Y/Z grid: every image pasted into one contact sheet, saved as one PNG

Everything goes to `--out` as JSON as well. Times are wall-clock (time.perf_counter); on a shared
machine, compare the ratios of one run and read them beside the load average it prints.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RUN = "bench"
BROWSER_CONNECTIONS = 6  # parallel HTTP/1.1 connections per host in common browsers


@dataclass(frozen=True)
class Shape:
    """How the stored images are spread: checkpoints x prompts x seeds (one CFG)."""

    checkpoints: int
    prompts: int
    seeds: int
    size: int = 64

    @property
    def images(self) -> int:
        return self.checkpoints * self.prompts * self.seeds

    @classmethod
    def for_images(cls, n: int, size: int) -> "Shape":
        """50 x 50 x 4 for 10,000; otherwise a cube-ish split with 4 seeds whose product is at least `n`."""
        side = max(2, math.ceil(math.sqrt(n / 4)))
        return cls(side, math.ceil(n / 4 / side), 4, size)


# --- the store -------------------------------------------------------------------------------------------

def _image_bytes(i: int, size: int) -> bytes:
    """A distinct PNG as the sampler writes it (infotext chunk, compress level 1): a colour gradient set by `i`
    plus noise, so it compresses about as badly as a generated image."""
    import numpy as np
    from PIL import Image

    from evalsvc.sampling.imagestore import png_bytes

    y, x = np.mgrid[0:size, 0:size]
    rgb = np.stack([x * 4 + i, y * 4 + i // 256, (x + y) * 2 + i * 7], axis=-1)
    rgb = rgb + np.random.default_rng(i).integers(0, 48, rgb.shape)
    return png_bytes(Image.fromarray((rgb % 256).astype(np.uint8)), f"bench image {i}\nSteps: 20, Seed: {i}")


def build_store(root: Path, shape: Shape, page_rows: int | None = None) -> tuple[int, int]:
    """A store with one run of `shape.images` sampled cells; returns its image files' bytes and count. Every cell
    has its image file, or with `page_rows` only those the first page shows (that many prompts at the first
    seed): the other cells' rows name files that are never read."""
    from evalsvc.setting import Setting
    from evalsvc.store import open_store
    from evalsvc.store.bulk import insert_rows

    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    checkpoints = [(sha(f"ckpt{c}"), f"bench-{c:06d}.safetensors", c) for c in range(shape.checkpoints)]
    suite = sha("suite")
    prompts = [(f"p{p:06d}", p, f"a bench prompt number {p}") for p in range(shape.prompts)]
    work, cells, samples, total, files = [], [], [], 0, 0
    setting = Setting(cfg=7.0, steps=20, sampler="euler", size=(shape.size, shape.size), base=checkpoints[0][0]).key
    with open_store(root) as store:
        images = store.layout.images
        i = 0
        for ckpt, _, _ in checkpoints:
            for prompt_id, _, text in prompts:
                for seed in range(shape.seeds):
                    key = sha(f"{ckpt}/{prompt_id}/{seed}")
                    if page_rows is None or (seed == 0 and int(prompt_id[1:]) < page_rows):
                        data = _image_bytes(i, shape.size)
                        digest = hashlib.sha256(data).hexdigest()
                        (images / digest[:2]).mkdir(exist_ok=True)
                        (images / digest[:2] / f"{digest}.png").write_bytes(data)  # no fsync: a throwaway store
                        total, files = total + len(data), files + 1
                    else:
                        digest = sha(f"image {key}")
                    rel = f"{digest[:2]}/{digest}.png"
                    work.append([key, ckpt, checkpoints[0][0], text, "", seed, 7.0, 20, "euler", shape.size, shape.size,
                                 1.0, 1, "float32", "done"])
                    cells.append([RUN, suite, prompt_id, key, setting])
                    samples.append([key, rel, digest, f"bench image {i}", 0.1])
                    i += 1
        with store.transaction() as db:
            db.execute("INSERT INTO runs (name, base_sha256) VALUES (?, ?)", [RUN, checkpoints[0][0]])
            insert_rows(db, "checkpoints", ["sha256", "path", "file_name", "kind", "arch", "epoch", "ema"],
                        [[s, f"/models/{name}", name, "lora", "sd15", epoch, False] for s, name, epoch in checkpoints])
            insert_rows(db, "run_checkpoints", ["run", "sha256", "role"],
                        [[RUN, s, "base" if n == 0 else "candidate"] for n, (s, _, _) in enumerate(checkpoints)])
            db.execute("INSERT INTO suites (hash, name) VALUES (?, ?)", [suite, "bench"])
            insert_rows(db, "prompts", ["suite_hash", "prompt_id", "position", "text", "negative", "role"],
                        [[suite, pid, pos, text, "", "target"] for pid, pos, text in prompts])
            columns = ["key", "checkpoint", "base", "prompt", "negative", "seed", "cfg", "steps", "sampler", "width",
                       "height", "lora_scale", "clip_skip", "precision", "state"]
            insert_rows(db, "work", columns, work)
            insert_rows(db, "grid_cells", ["run", "suite_hash", "prompt_id", "key", "setting"], cells)
            insert_rows(db, "samples", ["key", "image_path", "image_sha256", "infotext", "seconds"], samples)
    return total, files


# --- what is timed ---------------------------------------------------------------------------------------

def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def page_request(rows_per_page: int):
    """The page every figure is of: the grid tab's first page, prompts as rows and checkpoints as columns."""
    from evalsvc.app.grid import GridRequest

    return GridRequest(RUN, "prompt", "checkpoint", rows_per_page=rows_per_page)


def builders(root: Path, rows_per_page: int, repeats: int, before_repeats: int) -> dict:
    """The page built by the Python builder `grid_page` replaced (`grid_before.py`), by `grid_page` reading the
    run (axis values and coded cells) each call, and by `grid_page` with the app's `AxesCache`, each on a freshly
    opened store:
    cold (its first call) and the median of its warm calls; all must agree."""
    from grid_before import grid_page_before

    from evalsvc.app.grid import AxesCache, grid_page
    from evalsvc.store import open_store

    cache = AxesCache()

    def cached(db, request):
        return grid_page(db, request, cache.get(db, request.run))

    figures, pages = {}, {}
    for name, build, n in (("before", grid_page_before, before_repeats), ("sql", grid_page, repeats),
                           ("cached", cached, repeats)):
        with open_store(root, read_only=True) as store:
            cold, pages[name] = _timed(lambda: build(store.db, page_request(rows_per_page)))
            warm = [_timed(lambda: build(store.db, page_request(rows_per_page)))[0] for _ in range(n)]
        figures.update({f"{name}_cold": cold, f"{name}_warm": statistics.median(warm)})
    if not pages["before"] == pages["sql"] == pages["cached"]:
        raise RuntimeError("grid_page's page differs from the Python builder's")
    figures["builder_cells"] = len(pages["sql"].cells)
    return figures


def page_html(state) -> str:
    """The grid tab's first page: prompts as rows, checkpoints as columns, every other axis at its first value."""
    from evalsvc.app.ui import grid_html

    return grid_html(state, RUN, "prompt", "checkpoint", {}, 0)


def giant_html(state) -> str:
    """Every image of the run in one page, with the grid cell's markup (link, lazy thumbnail, tooltip)."""
    from html import escape

    with state.cursor() as db:
        rows = db.execute(
            "SELECT s.image_path, c.file_name, w.prompt, w.seed, w.cfg FROM grid_cells g JOIN work w ON w.key = g.key "
            "JOIN samples s ON s.key = g.key JOIN checkpoints c ON c.sha256 = w.checkpoint WHERE g.run = ? "
            "ORDER BY c.file_name, w.prompt, w.seed", [RUN]).fetchall()
    cells = []
    for image, checkpoint, prompt, seed, cfg in rows:
        title = escape(f"{checkpoint} | {prompt} | seed {seed} | CFG {cfg:g}")
        cells.append(f'<a href="/image/{image}" target="_blank"><img src="/image/{image}" title="{title}" '
                     f'width="128" loading="lazy"></a>')
    return f"<div>{''.join(cells)}</div>"


def giant_sheet(store, shape: Shape, out: Path) -> int:
    """A1111's X/Y/Z way: every image pasted into one sheet (checkpoints across, prompt x seed down), one PNG."""
    from PIL import Image

    rows = store.db.execute(
        "SELECT s.image_path FROM grid_cells g JOIN work w ON w.key = g.key JOIN samples s ON s.key = g.key "
        "JOIN checkpoints c ON c.sha256 = w.checkpoint WHERE g.run = ? ORDER BY g.prompt_id, w.seed, c.file_name",
        [RUN]).fetchall()
    columns = shape.checkpoints
    sheet = Image.new("RGB", (columns * shape.size, math.ceil(len(rows) / columns) * shape.size), "white")
    for n, (image_path,) in enumerate(rows):
        with Image.open(store.layout.images / image_path) as image:
            sheet.paste(image.convert("RGB"), ((n % columns) * shape.size, (n // columns) * shape.size))
    sheet.save(out, format="PNG")
    return out.stat().st_size


@contextlib.contextmanager
def served(state):
    """The app on a free local port in a uvicorn thread; yields its base URL."""
    import socket

    import uvicorn

    from evalsvc.app.server import build_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(state), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise RuntimeError("the app did not start within 60 s")
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def fetch_images(url: str, html: str) -> tuple[int, int]:
    """GET every `/image/...` the HTML shows, BROWSER_CONNECTIONS at a time: (images, bytes)."""
    import re

    import httpx

    paths = list(dict.fromkeys(re.findall(r'<img src="/(image/[^"]+)"', html)))
    local = threading.local()

    def get(path: str) -> int:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=60)
        response = local.client.get(path)
        response.raise_for_status()
        return len(response.content)

    with ThreadPoolExecutor(BROWSER_CONNECTIONS) as pool:
        sizes = list(pool.map(get, paths))
    return len(paths), sum(sizes)


def page_over_http(url: str) -> tuple[str, int, int]:
    """The first grid page through Gradio's API, then its images: (html, images, image bytes)."""
    import httpx

    from evalsvc.app.grid import AXES

    with httpx.Client(base_url=url, timeout=60) as client:
        filters = ["(first)"] * len(AXES)  # one per axis, in AXES order, then the page (from 1)
        posted = client.post("gradio_api/call/grid", json={"data": [RUN, "prompt", "checkpoint", *filters, 1]})
        posted.raise_for_status()
        with client.stream("GET", f"gradio_api/call/grid/{posted.json()['event_id']}") as stream:
            event = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event in ("complete", "error"):
                    if event == "error":
                        raise RuntimeError(f"the grid endpoint failed: {line}")
                    html = json.loads(line[6:])[0]
                    break
            else:
                raise RuntimeError("the grid endpoint answered no result")
    images, size = fetch_images(url, html)
    return html, images, size


# --- the run ---------------------------------------------------------------------------------------------

def run(args) -> dict:
    from evalsvc.app.server import AppConfig, AppState
    from evalsvc.store import open_store

    shape = Shape.for_images(args.images, args.size)
    config = AppConfig(rows_per_page=args.rows_per_page)
    with tempfile.TemporaryDirectory(prefix="grid-page-bench-") as tmp:
        root = Path(tmp) / "store"
        page_rows = None if args.giant_images else args.rows_per_page
        build_seconds, (image_bytes, files) = _timed(lambda: build_store(root, shape, page_rows))
        results: dict = {"shape": asdict(shape), "images": shape.images, "image_files": files,
                         "image_file_bytes": image_bytes, "image_bytes": image_bytes * shape.images / files,
                         "build_seconds": build_seconds, "rows_per_page": args.rows_per_page}
        results.update(builders(root, args.rows_per_page, args.repeats, args.before_repeats))
        with open_store(root) as store:
            state = AppState(store, config)
            cold, html = _timed(lambda: page_html(state))
            warm = [_timed(lambda: page_html(state))[0] for _ in range(args.repeats)]
            giant = [_timed(lambda: giant_html(state)) for _ in range(max(1, args.repeats // 4))]
            results.update(page_cold=cold, page_warm=statistics.median(warm), page_html_bytes=len(html.encode()),
                           page_images=html.count("<img "), giant_html=statistics.median(t for t, _ in giant),
                           giant_html_bytes=len(giant[0][1].encode()), giant_images=giant[0][1].count("<img "))
            if args.http:
                with served(state) as url:
                    page_over_http(url)  # one untimed call: Gradio's first call sets up its queue
                    http = [_timed(lambda: page_over_http(url)) for _ in range(args.http_repeats)]
                    results.update(page_http=statistics.median(t for t, _ in http), page_http_bytes=http[0][1][2])
                    if args.giant_images:
                        giant_http, (n, size) = _timed(lambda: fetch_images(url, giant[0][1]))
                        results.update(giant_http=results["giant_html"] + giant_http, giant_http_bytes=size,
                                       giant_http_images=n)
            if args.giant_images:
                sheet_seconds, sheet_bytes = _timed(lambda: giant_sheet(store, shape, Path(tmp) / "sheet.png"))
                results.update(giant_sheet=sheet_seconds, giant_sheet_bytes=sheet_bytes,
                               giant_sheet_pixels=shape.images * shape.size ** 2)
    return results


def table(r: dict) -> str:
    """The figures as Markdown: the page builders (before / ours), then ours against the giant grids, with ratios."""
    http, sheet = "page_http" in r, "giant_sheet" in r
    per_image = r["image_bytes"] / r["images"]  # estimated where not every image has its file
    page_bytes = r["page_html_bytes"] + (r["page_http_bytes"] if http else per_image * r["page_images"])
    giant_bytes = r["giant_html_bytes"] + (r["giant_http_bytes"] if "giant_http" in r else r["image_bytes"])
    ms, s_, mb = (lambda v: f"{v * 1e3:,.1f} ms"), (lambda v: f"{v:,.2f} s"), (lambda v: f"{v / 1e6:,.2f} MB")

    def x(value: float) -> str:
        return f"{value:,.0f}x" if value >= 10 else f"{value:.2g}x"

    shape = r["shape"]
    lines = [f"grid page vs giant grid: {r['images']:,} stored images ({shape['checkpoints']} checkpoints x "
             f"{shape['prompts']} prompts x {shape['seeds']} seeds, {shape['size']}px PNGs, "
             f"{r['image_bytes'] / 1e6:.1f} MB{'' if r['image_files'] == r['images'] else ' estimated'}); "
             f"a page shows {r['rows_per_page']} prompts x all checkpoints ({r['builder_cells']} images)", "",
             "| page builder (`grid_page`, no HTML) | cold | warm (median) |", "|---|---:|---:|",
             f"| before: every row of the run into Python (bench/grid_before.py) | {ms(r['before_cold'])} | "
             f"{ms(r['before_warm'])} |",
             f"| ours, the run read each call (one SQL scan for the axis values, one for the coded cells) | "
             f"{ms(r['sql_cold'])} | {ms(r['sql_warm'])} |",
             f"| ours with the app's AxesCache (as served: pinned and paged in memory) | {ms(r['cached_cold'])} | "
             f"{ms(r['cached_warm'])} |",
             f"| before / ours with the cache | {x(r['before_cold'] / r['cached_cold'])} | "
             f"{x(r['before_warm'] / r['cached_warm'])} |", "",
             "| | one grid page (ours) | giant HTML page | giant contact sheet (A1111 X/Y/Z) |",
             "|---|---:|---:|---:|",
             f"| build with its HTML, cold | {ms(r['page_cold'])} | | |",
             f"| build with its HTML, warm (median) | {ms(r['page_warm'])} | {ms(r['giant_html'])} | "
             f"{s_(r['giant_sheet']) if sheet else 'not run'} |"]
    if http:
        lines.append(f"| load over HTTP: HTML + every image, {BROWSER_CONNECTIONS} connections | "
                     f"{s_(r['page_http'])} | {s_(r['giant_http']) if 'giant_http' in r else 'not run'} | |")
    lines += [f"| bytes to the viewer{'' if http else ' (estimated)'} | {mb(page_bytes)} | {mb(giant_bytes)} | "
              f"{mb(r['giant_sheet_bytes']) if sheet else ''} |",
              f"| images shown | {r['page_images']:,} | {r['giant_images']:,} | "
              + (f"{r['images']:,} ({r['images'] * shape['size'] ** 2 / 1e6:.0f} MP) |" if sheet else "|"), ""]
    ratios = [f"HTML build {x(r['giant_html'] / r['page_warm'])}", f"bytes {x(giant_bytes / page_bytes)}"]
    if sheet:
        ratios[1:1] = [f"contact sheet build {x(r['giant_sheet'] / r['page_warm'])} the page's build"]
        ratios[-1] += f" (sheet {x(r['giant_sheet_bytes'] / page_bytes)})"
    if "giant_http" in r:
        ratios.insert(1, f"load over HTTP {x(r['giant_http'] / r['page_http'])}")
    lines += ["giant / one page: " + ", ".join(ratios) + ".",
              f"At 512px per image the contact sheet would be {r['images'] * 512 ** 2 / 1e9:.1f} gigapixels. "
              f"Store built in {r['build_seconds']:.0f} s ({r['image_files']:,} image files written)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000, help="stored images in the run (default 10,000)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--rows-per-page", type=int, default=6, help="grid rows per page (the app's default: 6)")
    parser.add_argument("--repeats", type=int, default=20, help="warm page builds to take the median of")
    parser.add_argument("--before-repeats", type=int, default=5,
                        help="warm builds of the Python page builder (grid_before.py) to take the median of")
    parser.add_argument("--no-giant-images", dest="giant_images", action="store_false",
                        help="write only the first page's image files and skip the giant grids that read every "
                             "image (over HTTP, the contact sheet): for --images 100000")
    parser.add_argument("--http-repeats", type=int, default=5, help="page loads over HTTP to take the median of")
    parser.add_argument("--no-http", dest="http", action="store_false", help="skip the timings through the app")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "grid_page.json")
    args = parser.parse_args(argv)
    if args.images < 8 or args.size < 8 or args.repeats < 1 or args.http_repeats < 1 or args.rows_per_page < 1 \
            or args.before_repeats < 1:
        parser.error("--images and --size must be >= 8, the repeats and --rows-per-page >= 1")
    results = run(args)
    results["machine"] = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_average": os.getloadavg()}
    text = table(results)
    print(text)
    print(f"load average {results['machine']['load_average'][0]:.1f} on {os.cpu_count()} CPUs")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
