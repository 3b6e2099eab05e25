# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Drive the demo in a real headless Chromium, as a person would: serve it on a free localhost port, upload an image
to the zero-shot tab, type labels, press the button, wait for the picture, take a screenshot.

Used by `tests/test_demo_browser.py` and to make the screenshot in docs/publishing.md:

    python -m tips_hf.demo.browser --model DIR --image scene.png --screenshot docs/images/demo_zeroshot.png

Needs Playwright's Python package and a Chromium binary (Debian's `chromium`; Playwright's own browser download is
not used): `TIPS_CHROMIUM`, else `chromium` / `chromium-browser` / `google-chrome` on the PATH.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# The flags this machine's sandbox needs (root, no GPU) and no background traffic to Google's hosts.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def find_chromium() -> str | None:
    """Path of a Chromium-family browser, or None."""
    candidates = [os.environ.get("TIPS_CHROMIUM")] + [
        shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
    ]
    return next((path for path in candidates if path and Path(path).exists()), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_demo(model_dir: str | os.PathLike, port: int | None = None, timeout: float = 180.0) -> Iterator[str]:
    """Run `tips-demo --model DIR --port P` in a child process until the block ends; yields its URL."""
    port = port or free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "tips_hf.demo.cli", "--model", str(model_dir), "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"tips-demo exited with code {process.returncode}:\n{process.stdout.read()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"tips-demo did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class ZeroShotRun:
    output_png: bytes  # the picture the page shows in the output component, as served
    screenshot: Path  # the whole page


def run_zero_shot(
    url: str,
    image: str | os.PathLike,
    labels: Sequence[str],
    screenshot: str | os.PathLike,
    chromium: str | None = None,
    timeout_ms: int = 120_000,
    viewport: tuple[int, int] = (1280, 900),
) -> ZeroShotRun:
    """Open the demo at `url`, run the zero-shot tab on `image` with `labels`, and save a screenshot of the page."""
    from playwright.sync_api import sync_playwright

    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no Chromium found (install Debian's chromium or set TIPS_CHROMIUM)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.set_default_timeout(timeout_ms)
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_role("tab", name="Zero-shot segmentation").click()
            page.locator("#zeroshot-input input[type=file]").set_input_files(str(image))
            page.locator("#zeroshot-input img").first.wait_for(state="visible")  # the upload is previewed
            page.locator("#zeroshot-labels textarea").fill(", ".join(labels))
            page.locator("#zeroshot-run").click()
            output = page.locator("#zeroshot-output img").first
            output.wait_for(state="visible")
            page.wait_for_function(
                "() => { const img = document.querySelector('#zeroshot-output img');"
                " return img && img.complete && img.naturalWidth > 0; }"
            )
            page.locator("#zeroshot-legend-items").wait_for(state="attached")
            source = output.get_attribute("src")
            if source.startswith("data:"):
                png = base64.b64decode(source.split(",", 1)[1])
            else:
                png = page.request.get(source if source.startswith("http") else url.rstrip("/") + source).body()
            screenshot = Path(screenshot)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return ZeroShotRun(output_png=png, screenshot=screenshot)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshot the demo's zero-shot tab in headless Chromium.")
    parser.add_argument("--model", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--labels", nargs="+", default=["circle", "square", "triangle", "star", "background"])
    parser.add_argument("--screenshot", required=True)
    args = parser.parse_args(argv)
    from PIL import Image

    with serve_demo(args.model) as url:
        run = run_zero_shot(url, args.image, args.labels, args.screenshot)
    print(f"output {Image.open(io.BytesIO(run.output_png)).size}, screenshot {run.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
