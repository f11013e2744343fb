"""The README's pictures of the dashboard, taken in headless Chromium on the demo study (`make demo` first).

    .venv/bin/python dashboard/screenshots.py [--storage URL] [--name demo]

Writes ``dashboard/screenshot.png`` (the whole page: Pareto view, trials, a trial's detail, the optimisation
history, two trials compared) and ``dashboard/screenshot-search.png`` (the other two tabs of "How the search
went": parameter importances and parallel coordinates), each atomically.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

HERE = Path(__file__).resolve().parent
VIEWPORT = {"width": 1400, "height": 4200}  # Streamlit scrolls inside the page: the viewport is the picture
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def _trimmed(png: bytes, margin: int = 24) -> Image.Image:
    """The picture without the blank space below the page's last element."""
    from PIL import Image, ImageChops

    image = Image.open(io.BytesIO(png)).convert("RGB")
    main = image.crop((image.width // 3, 0, image.width, image.height))  # the sidebar runs the full height
    blank = Image.new("RGB", main.size, main.getpixel((main.width - 1, main.height - 1)))
    box = ImageChops.difference(main, blank).getbbox()
    return image.crop((0, 0, image.width, min(image.height, box[3] + margin))) if box else image


def take(storage: str | None, name: str) -> list[Path]:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from autocompress._io import atomic_write
    from autocompress.dashboard_server import free_port, wait_until_healthy

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("Chromium is not installed (apt-get install chromium)")
    port = free_port()
    command = [sys.executable, "-m", "autocompress", "dashboard", "--name", name, "--port", str(port)]
    server = subprocess.Popen(command + (["--storage", storage] if storage else []), cwd=HERE.parent,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    written = []

    def save(image: Image.Image, path: Path) -> None:
        atomic_write(path, lambda fh: image.save(fh, format="PNG", optimize=True))
        written.append(path)

    try:
        if not wait_until_healthy(port, server):
            raise SystemExit("the dashboard did not start (is there a study? run `make demo`)")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
            while page.locator(".js-plotly-plot").count() < 4:  # Pareto, widths, history, compared widths
                page.wait_for_timeout(200)
            page.wait_for_timeout(2000)  # plotly's transitions
            save(_trimmed(page.screenshot()), HERE / "screenshot.png")
            tabs = page.locator("[data-testid=stTabs]").first
            panels = []
            for tab, drawn in (("Parameter importances", ".barlayer"), ("Parallel coordinates", ".parcoords")):
                page.get_by_role("tab", name=tab).click()
                page.locator(f"[role=tabpanel]:visible {drawn}").first.wait_for(timeout=120_000, state="attached")
                page.wait_for_timeout(2000)
                panels.append(Image.open(io.BytesIO(tabs.screenshot())).convert("RGB"))
            stacked = Image.new("RGB", (max(p.width for p in panels), sum(p.height for p in panels) + 24),
                                "white")
            stacked.paste(panels[0], (0, 0))
            stacked.paste(panels[1], (0, panels[0].height + 24))
            save(stacked, HERE / "screenshot-search.png")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=None, help="the study storage (default: studies/autocompress.db)")
    parser.add_argument("--name", default="demo")
    args = parser.parse_args(argv)
    for path in take(args.storage, args.name):
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
