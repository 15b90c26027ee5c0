"""Load test of the Gradio Space (slow; `make test-all`): 32 clients send mixed requests for 60 s to
`python spaces/app.py` in its own process. Every request must succeed, every oversize upload must be refused, and
the server's resident memory may grow by less than 10 % over the minute, measured from its warm state: the highest
resident size during 30 s of the same load before the minute starts. (Serving 32 concurrent connections and 9 MB
uploads the first time raises the allocator's high-water mark once, by about 10 %; a leak keeps growing.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
psutil = pytest.importorskip("psutil")
from gradio_client import Client, handle_file  # noqa: E402

from space_server import SPACE_DIR, free_port, import_space_module  # noqa: E402

CLIENTS = 32
DURATION_S = float(os.environ.get("UNIF2ACE_LOAD_SECONDS", "60"))
WARM_UP_S = 30.0
OVERSIZE = 9 << 20  # the Space accepts uploads up to 8 MB
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


def resident_bytes(process: psutil.Process) -> int:
    return process.memory_info().rss + sum(child.memory_info().rss for child in process.children(recursive=True))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port, temp = free_port(), tmp_path_factory.mktemp("gradio")
    env = {
        **os.environ,
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_TEMP_DIR": str(temp),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "1",
    }
    process = subprocess.Popen([sys.executable, str(SPACE_DIR / "app.py")], env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the Space did not start (exit code {process.poll()})")
            time.sleep(1)
    yield process, url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def face(tmp_path_factory) -> Path:
    examples = import_space_module("face_examples")
    example = examples.synthface_examples(1, seed=3)[0]
    root = tmp_path_factory.mktemp("faces")
    example.image.save(root / "face.png")
    examples.hair_mask_layer(example.image).save(root / "hair.png")
    return root


def one_request(client: Client, kind: int, faces: Path, url: str) -> str:
    """Request `kind` of four; returns what kind of request it was. Raises on any failure."""
    import httpx

    if kind == 0:
        result = client.predict(f"A smiling person, seed {kind}.", 2, 3.0, 1, api_name="/generate")
        with Image.open(result) as image:
            assert image.size == (64, 64)
        return "generate"
    if kind == 1:
        answer = client.predict(handle_file(faces / "face.png"), "What is the hair color?", api_name="/understand")
        assert isinstance(answer, str) and answer.strip()
        return "understand"
    if kind == 2:
        editor = {"background": handle_file(faces / "face.png"), "layers": [handle_file(faces / "hair.png")]}
        result = client.predict({**editor, "composite": None}, "Blond hair.", 2, 3.0, 1, api_name="/edit")
        with Image.open(result) as image:
            assert image.size == (64, 64)
        return "edit"
    refused = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.png", b"\0" * OVERSIZE)}, timeout=120)
    assert refused.status_code == 413, refused.status_code
    return "oversize upload refused"


def test_32_concurrent_mixed_clients_for_a_minute(server, face, tmp_path):
    process, url = server
    warm = Client(url, verbose=False, download_files=str(tmp_path / "warm"))
    for kind in range(4):  # every code path once, so the baseline includes what a first request allocates
        one_request(warm, kind, face, url)
    process_info = psutil.Process(process.pid)
    idle = resident_bytes(process_info)

    counts: dict[str, int] = {}
    failures: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()
    measuring = threading.Event()
    start = time.monotonic()
    stop = start + WARM_UP_S + DURATION_S

    def worker(index: int) -> None:
        client = Client(url, verbose=False, download_files=str(tmp_path / f"client{index}"))
        kind = index % 4
        while time.monotonic() < stop:
            counted = measuring.is_set()  # warm-up requests must succeed too, but are not in the figures
            started = time.perf_counter()
            try:
                name = one_request(client, kind, face, url)
            except Exception as error:  # noqa: BLE001 - every failure is counted and reported
                with lock:
                    failures.append(f"client {index}, request kind {kind}: {type(error).__name__}: {error}")
            else:
                if counted:
                    with lock:
                        counts[name] = counts.get(name, 0) + 1
                        latencies.append(time.perf_counter() - started)
            kind = (kind + 1) % 4

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CLIENTS)]
    samples: list[float] = []
    warm_up: list[float] = []
    for thread in threads:
        thread.start()
    while time.monotonic() < start + WARM_UP_S:
        warm_up.append(resident_bytes(process_info))
        time.sleep(1)
    baseline = max(warm_up)
    measuring.set()
    while any(thread.is_alive() for thread in threads):
        samples.append(resident_bytes(process_info))
        time.sleep(1)
    peak = max(samples + [baseline])
    final = resident_bytes(process_info)
    latencies.sort()
    summary = {
        "clients": CLIENTS,
        "seconds": DURATION_S,
        "requests": sum(counts.values()) + len(failures),
        "by_kind": counts,
        "failed": len(failures),
        "latency_p50_s": round(latencies[len(latencies) // 2], 2) if latencies else None,
        "latency_p95_s": round(latencies[int(len(latencies) * 0.95)], 2) if latencies else None,
        "rss_idle_mb": round(idle / 2**20, 1),
        "rss_baseline_mb": round(baseline / 2**20, 1),
        "rss_peak_mb": round(peak / 2**20, 1),
        "rss_final_mb": round(final / 2**20, 1),
        "rss_growth_percent": round(100 * (final - baseline) / baseline, 2),
        "rss_every_10s_mb": [round(v / 2**20) for v in samples[::10]],
    }
    print("space load test:", json.dumps(summary))
    assert not failures, failures[:5]
    assert set(counts) == {"generate", "understand", "edit", "oversize upload refused"}, counts
    assert summary["rss_growth_percent"] < 10, summary
