"""The Gradio Space: every endpoint through gradio_client against a launched app, concurrency, limits, bad input."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

import unif2ace_hf  # noqa: E402
from space_server import SPACE_DIR, free_ports, import_space_module, launched_space  # noqa: E402

STEPS = 4
GUIDANCE = 3.0

pytestmark = [  # pandas noise from inside gradio's queue (hf-stack-notes §8)
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", None}
OUTBOUND: list[str] = []
"""Hosts other than this machine that anything in this module's process tried to resolve (refused, recorded)."""


@pytest.fixture(scope="module")
def ports():
    return free_ports(2)  # [in-process app, `python spaces/app.py`]


@pytest.fixture(scope="module")
def script_server(ports, tmp_path_factory):
    """`python spaces/app.py` on GRADIO_SERVER_PORT, started before the in-process app so that its start-up
    (importing torch, transformers and gradio) overlaps the other tests."""
    temp_dir = tmp_path_factory.mktemp("script")
    env = {
        **os.environ,
        "GRADIO_SERVER_PORT": str(ports[1]),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_TEMP_DIR": str(temp_dir),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "1",
    }
    server = subprocess.Popen(
        [sys.executable, str(SPACE_DIR / "app.py")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    yield server, f"http://127.0.0.1:{ports[1]}/", temp_dir
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def space_url(ports, script_server, tmp_path_factory):
    real_getaddrinfo = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if host not in LOCAL_HOSTS:
            OUTBOUND.append(str(host))
            raise socket.gaierror(f"outbound lookup of {host!r} refused by the test")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.getaddrinfo = local_only  # from before the app is built until it is closed
    try:
        with launched_space(tmp_path_factory.mktemp("gradio"), port=ports[0]) as url:
            yield url
    finally:
        socket.getaddrinfo = real_getaddrinfo


@pytest.fixture(scope="module")
def client(space_url, tmp_path_factory):
    return Client(space_url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


@pytest.fixture(scope="module")
def face_files(tmp_path_factory):
    """A SynthFace face, a paint layer over its hair, and an empty paint layer, as PNG files to upload."""
    examples = import_space_module("face_examples")
    example = examples.synthface_examples(1, seed=7)[0]
    root = tmp_path_factory.mktemp("faces")
    example.image.save(root / "face.png")
    examples.hair_mask_layer(example.image).save(root / "hair.png")
    Image.new("RGBA", example.image.size, (0, 0, 0, 0)).save(root / "empty.png")
    return example, root


@pytest.fixture(scope="module")
def reference():
    """The library's own pipelines on the same checkpoint, to check what the endpoints return."""
    from transformers import pipeline

    generator = unif2ace_hf.UniF2acePipeline.from_pretrained(unif2ace_hf.DEFAULT_MODEL)
    generator.set_progress_bar_config(disable=True)
    understander = pipeline("face-understanding", model=generator.model, processor=generator.processor)
    return generator, understander


def _pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def _editor_value(root, layer: str = "hair.png") -> dict:
    return {"background": handle_file(root / "face.png"), "layers": [handle_file(root / layer)], "composite": None}


def test_endpoints_take_no_model_or_path_argument(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/understand", "/generate", "/edit"} <= set(endpoints)
    for name, info in endpoints.items():
        labels = " ".join(p["parameter_name"] + " " + str(p.get("label", "")) for p in info["parameters"]).lower()
        assert "model" not in labels and "path" not in labels, name


def test_understand_answers_and_captions_like_the_pipeline(client, face_files, reference):
    example, root = face_files
    _, understander = reference
    face = Image.open(root / "face.png").convert("RGB")
    answer = client.predict(handle_file(root / "face.png"), example.question, api_name="/understand")
    expected = understander(face, question=example.question, max_new_tokens=96)["answer"]
    assert answer == expected and answer.strip()
    caption = client.predict(handle_file(root / "face.png"), "", api_name="/understand")
    assert caption == understander(face, max_new_tokens=96)["caption"]
    assert len(caption.split()) > len(answer.split())


def test_generate_returns_the_pipelines_face_for_the_seed(client, reference):
    generator, _ = reference
    prompt = "A young woman with long wavy red hair and round glasses, smiling."
    path = client.predict(prompt, STEPS, GUIDANCE, 7, api_name="/generate")
    expected = generator(
        prompt, num_inference_steps=STEPS, guidance_scale=GUIDANCE, generator=torch.Generator().manual_seed(7)
    ).images[0]
    served = _pixels(path)
    assert served.shape == (64, 64, 3)
    assert np.abs(served - np.asarray(expected, dtype=np.int16)).max() == 0  # PNG output: lossless
    other = _pixels(client.predict(prompt, STEPS, GUIDANCE, 8, api_name="/generate"))
    assert np.abs(served - other).mean() > 1


def test_generate_reports_progress_per_step(client):
    job = client.submit("A smiling woman with short hair.", 8, GUIDANCE, 1, api_name="/generate")
    seen = set()
    while not job.done():
        for update in job.status().progress_data or []:
            seen.add((update.index, update.length, update.unit))
        time.sleep(0.01)
    assert _pixels(job.result()).shape == (64, 64, 3)
    assert seen and {length for _, length, _ in seen} == {8} and {unit for _, _, unit in seen} == {"steps"}
    assert all(1 <= index <= 8 for index, _, _ in seen)  # a step count, never a fraction


def test_edit_regenerates_the_painted_part_like_the_pipeline(client, face_files, reference):
    example, root = face_files
    generator, _ = reference
    prompt = "A person with short curly black hair."
    path = client.predict(_editor_value(root), prompt, STEPS, GUIDANCE, 3, api_name="/edit")
    face = Image.open(root / "face.png").convert("RGB")
    mask = Image.fromarray((np.asarray(Image.open(root / "hair.png"))[..., 3] > 0).astype(np.uint8) * 255)
    expected = generator(
        prompt,
        image=face,
        mask_image=mask,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        generator=torch.Generator().manual_seed(3),
    ).images[0]
    assert np.abs(_pixels(path) - np.asarray(expected, dtype=np.int16)).max() == 0


def test_eight_concurrent_mixed_requests_all_succeed(client, face_files):
    _, root = face_files
    calls = [("/generate", (f"A smiling person number {i}.", 2, GUIDANCE, i)) for i in range(4)]
    calls += [("/understand", (handle_file(root / "face.png"), q)) for q in ("What is the hair color?", "")]
    calls += [("/edit", (_editor_value(root), "Blond hair.", 2, GUIDANCE, i)) for i in range(2)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(client.predict, *args, api_name=name) for name, args in calls]
        results = [future.result(timeout=180) for future in futures]
    assert time.perf_counter() - started < 180
    for (name, _), result in zip(calls, results):
        if name == "/understand":
            assert isinstance(result, str) and result.strip()
        else:
            assert _pixels(result).shape == (64, 64, 3)


@pytest.mark.parametrize(
    ("api_name", "arguments", "argument_named"),
    [
        ("/generate", ("   ", STEPS, GUIDANCE, 0), "prompt"),
        ("/generate", ("x" * 1001, STEPS, GUIDANCE, 0), "prompt"),
        ("/generate", ("A face.", 0, GUIDANCE, 0), "steps"),
        ("/generate", ("A face.", 500, GUIDANCE, 0), "steps"),
        ("/generate", ("A face.", STEPS, -1.0, 0), "guidance"),
        ("/generate", ("A face.", STEPS, GUIDANCE, -5), "seed"),
    ],
)
def test_bad_sampling_input_is_refused_naming_the_argument(client, api_name, arguments, argument_named):
    with pytest.raises(AppError, match=rf"^{argument_named}: "):
        client.predict(*arguments, api_name=api_name)


def test_bad_understanding_and_edit_input_is_refused_naming_the_argument(client, face_files):
    _, root = face_files
    with pytest.raises(AppError, match=r"^question: .*too long"):
        client.predict(handle_file(root / "face.png"), "why? " * 100, api_name="/understand")
    with pytest.raises(AppError, match=r"^image: upload"):
        client.predict(None, "What is the hair color?", api_name="/understand")
    with pytest.raises(AppError, match=r"^mask: draw over"):
        client.predict(_editor_value(root, "empty.png"), "Blond hair.", STEPS, GUIDANCE, 0, api_name="/edit")


def _png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge image but whose pixel data is a few bytes (a decompression-bomb shape)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    ihdr = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    data = b"IDAT" + zlib.compress(b"\x00" * 16)
    idat = struct.pack(">I", len(data) - 4) + data + struct.pack(">I", zlib.crc32(data))
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat + end


def test_oversized_and_non_image_uploads_are_refused_before_decoding(client, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_claiming(30_000, 30_000))  # 900 M pixels, 2.7 GB decoded: refused from the header
    with pytest.raises(AppError, match=r"^image: .*(larger than this Space accepts|too many pixels)"):
        client.predict(handle_file(bomb), "", api_name="/understand")
    wide = tmp_path / "wide.png"
    wide.write_bytes(_png_header_claiming(5000, 64))
    with pytest.raises(AppError, match=r"^image: 5000x64 is larger"):
        client.predict(handle_file(wide), "", api_name="/understand")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(AppError, match=r"^image: not an image file"):
        client.predict(handle_file(text), "", api_name="/understand")
    editor = {"background": handle_file(bomb), "layers": [], "composite": None}
    with pytest.raises(AppError, match=r"^image: "):
        client.predict(editor, "A face.", STEPS, GUIDANCE, 0, api_name="/edit")


def test_uploads_over_the_size_limit_are_refused_by_the_server(space_url):
    import httpx

    upload = f"{space_url}gradio_api/upload"
    big = httpx.post(upload, files={"files": ("big.png", b"\0" * (9 << 20), "image/png")}, timeout=60)
    assert big.status_code == 413 and "8388608" in big.text  # MAX_UPLOAD_SIZE = 8 MB
    small = httpx.post(upload, files={"files": ("small.png", b"\0" * (1 << 20), "image/png")}, timeout=60)
    assert small.status_code == 200


def test_server_serves_no_file_system_paths(space_url):
    for path in (SPACE_DIR / "app.py", "/etc/passwd", unif2ace_hf.DEFAULT_MODEL + "/config.json"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{space_url}gradio_api/file={path}", timeout=10)
        assert refused.value.code in (403, 404)


def test_no_outbound_traffic_while_serving(client, face_files):
    _, root = face_files
    client.predict(handle_file(root / "face.png"), "", api_name="/understand")
    time.sleep(1)  # analytics and telemetry run in background threads
    assert OUTBOUND == []


def test_model_path_comes_from_argument_then_environment_then_default(monkeypatch, tmp_path):
    service = import_space_module("face_service")
    monkeypatch.delenv("UNIF2ACE_MODEL", raising=False)
    assert service.resolve_model_path() == unif2ace_hf.DEFAULT_MODEL
    monkeypatch.setenv("UNIF2ACE_MODEL", str(tmp_path))
    assert service.resolve_model_path() == str(tmp_path)
    assert service.resolve_model_path("elsewhere") == "elsewhere"
    with pytest.raises(ValueError, match=r"^UNIF2ACE_MODEL: cannot load the model from .*a local folder"):
        service.FaceService()


def test_examples_include_synthface_faces_and_real_photographs():
    examples = import_space_module("face_examples")
    faces = examples.synthface_examples(3)
    assert [f.caption for f in faces] == [f.caption for f in examples.synthface_examples(3)]
    assert all(f.image.size == (examples.EXAMPLE_SIZE,) * 2 and f.question.endswith("?") for f in faces)
    photos = examples.real_photo_examples()
    assert len(photos) == 2  # scikit-image and matplotlib are in the dev and space extras
    for photo in photos.values():
        assert photo.mode == "RGB" and photo.size == (examples.PHOTO_SIZE,) * 2
        assert np.asarray(photo).std() > 20  # a photograph, not a blank


def test_python_spaces_app_serves_on_gradio_server_port(script_server):
    server, url, temp_dir = script_server
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url + "config", timeout=5)
            break
        except (urllib.error.URLError, ConnectionError):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Space did not start: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.5)
    endpoints = Client(url, verbose=False, download_files=str(temp_dir)).view_api(
        return_format="dict", print_info=False
    )["named_endpoints"]
    assert {"/understand", "/generate"} <= set(endpoints)


def test_space_card_and_requirements_describe_this_app():
    import gradio
    from huggingface_hub import SpaceCard

    card = SpaceCard.load(SPACE_DIR / "README.md").data
    assert card.sdk == "gradio" and (SPACE_DIR / card.app_file).is_file()
    assert card.sdk_version.split(".")[0] == gradio.__version__.split(".")[0]
    assert card.license == "apache-2.0" and card.models and card.datasets
    requirements = [
        line.split("[")[0].split("=")[0].split(">")[0].strip()
        for line in (SPACE_DIR / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert requirements == ["unif2ace-hf", "scikit-image", "matplotlib"]  # what app.py and face_examples.py import
