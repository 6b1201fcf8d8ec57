"""Load test of the explorer on loopback: 500 predict requests from 8 concurrent clients, the
server time of one draw interaction (all feature maps + probabilities) on a 28x28 model,
predict p50/p95 from 16 concurrent clients alone and while feature visualizations run (they
must not hold up fast requests), and the page's load time in headless Chromium.

    python bench/serve_load.py [RUN_DIR]      (default: trains a convnet on mnist5k for 2 epochs)

The server runs as `convlens serve` in its own process, bound to 127.0.0.1 only, so the clients
do not share its interpreter. Baseline in the same run: the model's own forward pass for one
image, in this process without HTTP; the ratios say what the web layer costs on top of it.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_pressure, median

HOST = "127.0.0.1"  # loopback only, never another address
REQUESTS, CLIENTS = 500, 8
BUSY_CLIENTS = 16  # clients hammering predict while feature visualizations run
INTERACTIONS = 100


def drawing_png(seed: int) -> bytes:
    """A 280x280 canvas with a white stroke, as the page sends it."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    canvas = Image.new("L", (280, 280), 0)
    points = [tuple(int(v) for v in rng.integers(60, 220, 2)) for _ in range(4)]
    ImageDraw.Draw(canvas).line(points, fill=255, width=22)
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    return buffer.getvalue()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def train_run(folder: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "convlens",
            "train",
            "--data",
            "mnist5k",
            "--epochs",
            "2",
            "--out",
            str(folder),
        ],
        check=True,
        capture_output=True,
    )
    return folder


def start_server(run_dir: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "convlens", "serve", str(run_dir), "--host", HOST, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stderr.readline()  # the banner: the app is built and the socket bound
    return process, f"http://{HOST}:{port}"


def forward_baseline(run_dir: Path) -> float:
    """Seconds for the model's forward pass on one 28x28 image, no HTTP (median of 200, one thread:
    two threads are erratic when other processes keep a core busy, see PERF-NOTES)."""
    import torch

    from convlens.checkpoint import load_checkpoint
    from convlens.predict import predict_probabilities

    torch.set_num_threads(1)
    model, _ = load_checkpoint(run_dir)
    image = torch.rand(1, *model.in_shape)
    for _ in range(20):  # warm up
        predict_probabilities(model, image)
    samples = []
    for _ in range(200):
        start = time.perf_counter()
        predict_probabilities(model, image)
        samples.append(time.perf_counter() - start)
    return median(samples)


def load_test(url: str, run_id: str, pngs: list[bytes]) -> tuple[list[float], int]:
    import httpx

    def one(index: int, client: httpx.Client) -> tuple[float, bool]:
        start = time.perf_counter()
        response = client.post(
            f"{url}/api/runs/{run_id}/predict",
            files={"image": ("drawing.png", pngs[index % len(pngs)], "image/png")},
        )
        return time.perf_counter() - start, response.status_code == 200

    clients = [httpx.Client(timeout=60) for _ in range(CLIENTS)]
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(lambda i: one(i, clients[i % CLIENTS]), range(REQUESTS)))
    finally:
        for client in clients:
            client.close()
    return [seconds for seconds, _ in results], sum(1 for _, ok in results if not ok)


def draw_interactions(url: str, run_id: str, pngs: list[bytes]) -> tuple[list[float], list[float], int]:
    """One client drawing: /activations per stroke; server time from the Server-Timing header."""
    import httpx

    server, wall = [], []
    with httpx.Client(timeout=60) as client:
        for index in range(INTERACTIONS):
            start = time.perf_counter()
            response = client.post(
                f"{url}/api/runs/{run_id}/activations",
                files={"image": ("drawing.png", pngs[index % len(pngs)], "image/png")},
            )
            wall.append(time.perf_counter() - start)
            response.raise_for_status()
            server.append(float(response.headers["server-timing"].split("dur=")[1]) / 1000)
            size = len(response.content)
    return server, wall, size


def predict_while(url: str, run_id: str, pngs: list[bytes], busy) -> list[float]:
    """Latencies of predict requests from BUSY_CLIENTS clients, each looping while ``busy()``."""
    import httpx

    def client_loop(n: int) -> list[float]:
        samples = []
        with httpx.Client(timeout=60) as client:
            while busy():
                start = time.perf_counter()
                response = client.post(
                    f"{url}/api/runs/{run_id}/predict",
                    files={"image": ("drawing.png", pngs[(n + len(samples)) % len(pngs)], "image/png")},
                )
                response.raise_for_status()
                samples.append(time.perf_counter() - start)
        return samples

    with ThreadPoolExecutor(BUSY_CLIENTS) as pool:
        return [s for samples in pool.map(client_loop, range(BUSY_CLIENTS)) for s in samples]


def contended(url: str, run_id: str, pngs: list[bytes]) -> dict:
    """Predict p50/p95 from 16 clients: alone (as long as the second phase, at most 10 s) and while one
    client requests the feature visualization of every spatial stage (each computed once)."""
    import threading

    import httpx

    card = httpx.get(f"{url}/api/runs/{run_id}", timeout=60).json()
    stages = [s["name"] for s in card["stages"] if len(s["shape"]) == 3 and s["name"] != "normalize"]
    feature_seconds: list[float] = []
    done = threading.Event()

    def visualize() -> None:
        with httpx.Client(timeout=600) as client:
            for stage in stages:
                start = time.perf_counter()
                client.get(f"{url}/api/runs/{run_id}/features", params={"stage": stage}).raise_for_status()
                feature_seconds.append(time.perf_counter() - start)
        done.set()

    worker = threading.Thread(target=visualize)
    worker.start()
    busy = predict_while(url, run_id, pngs, lambda: not done.is_set())
    worker.join()
    until = time.perf_counter() + min(sum(feature_seconds), 10.0)  # bounded: at most 10 s of load
    quiet = predict_while(url, run_id, pngs, lambda: time.perf_counter() < until)
    return {"stages": stages, "features": feature_seconds, "busy": busy, "quiet": quiet}


def page_loads(url: str, times: int = 5) -> list[float] | None:
    """Seconds from navigation to the page being ready (runs listed, model card and first
    feature maps drawn) in headless Debian Chromium; None where Chromium or Playwright is missing."""
    chromium = Path("/usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not chromium.exists():
        return None
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
    ]
    samples = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=args)
        for _ in range(times):
            page = browser.new_page()
            start = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("#network[data-source]")
            samples.append(time.perf_counter() - start)
            page.close()
        browser.close()
    return samples


def main() -> None:
    print(f"CPU pressure before: {cpu_pressure()}")
    pngs = [drawing_png(seed) for seed in range(16)]
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else train_run(Path(scratch) / "mnist")
        baseline = forward_baseline(run_dir)
        process, url = start_server(run_dir)
        try:
            import httpx

            run_id = httpx.get(f"{url}/api/runs", timeout=30).json()[0]["id"]
            for png in pngs[:4]:  # warm up: first requests import Pillow plugins and the inspect module
                httpx.post(
                    f"{url}/api/runs/{run_id}/activations", files={"image": ("d.png", png)}, timeout=60
                )
            start = time.perf_counter()
            latencies, errors = load_test(url, run_id, pngs)
            elapsed = time.perf_counter() - start
            server, wall, size = draw_interactions(url, run_id, pngs)
            contention = contended(url, run_id, pngs)
            loads = page_loads(url + "/")
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
    print(f"model forward, 1 image, 1 thread, no HTTP (baseline): {1000 * baseline:.2f} ms")
    print(
        f"predict: {REQUESTS} requests from {CLIENTS} clients in {elapsed:.1f} s "
        f"({REQUESTS / elapsed:.0f} req/s), errors {errors}"
    )
    print(
        f"  latency median {1000 * median(latencies):.1f} ms ({median(latencies) / baseline:.1f}x baseline), "
        f"p99 {1000 * percentile(latencies, 99):.1f} ms"
    )
    print(
        f"draw interaction (upload 280x280 PNG -> every stage's feature maps + probabilities, {size / 1024:.0f} KB):"
    )
    print(
        f"  server time median {1000 * median(server):.1f} ms, p99 {1000 * percentile(server, 99):.1f} ms "
        f"({median(server) / baseline:.1f}x baseline); round trip median {1000 * median(wall):.1f} ms"
    )
    quiet, busy = contention["quiet"], contention["busy"] or [float("nan")]
    print(f"predict from {BUSY_CLIENTS} concurrent clients:")
    print(
        f"  alone: {len(quiet)} requests, p50 {1000 * percentile(quiet, 50):.1f} ms, "
        f"p95 {1000 * percentile(quiet, 95):.1f} ms"
    )
    print(
        f"  while feature visualizations of {', '.join(contention['stages'])} ran "
        f"({sum(contention['features']):.1f} s): {len(busy)} requests, "
        f"p50 {1000 * percentile(busy, 50):.1f} ms, p95 {1000 * percentile(busy, 95):.1f} ms"
    )
    if loads:
        print(
            f"page load to first feature maps in Chromium: median {1000 * median(loads):.0f} ms of {len(loads)}"
        )
    else:
        print("page load: skipped (needs /usr/bin/chromium and playwright)")
    print(f"CPU pressure after: {cpu_pressure()}  (threads: {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
