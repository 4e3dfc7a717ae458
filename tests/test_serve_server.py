"""The serve web server (models.serve.server / cli) over HTTP, on a tiny random CMP run."""

from __future__ import annotations

import base64
import http.client
import io
import json
import struct
import subprocess
import sys
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from models.methods.cpfs import CPFSModule
from models.serve.cli import build_state, main
from models.serve.gallery import export_gallery
from models.serve.run import RunError
from models.serve.server import make_server
from pipeline.shards.writer import write_shards
from tests.serve_helpers import write_gallery, write_run
from tests.test_shards import make_set


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run = write_run(tmp_path_factory.mktemp("serve") / "run")
    names = write_gallery(run)
    server = make_server(build_state(run, device="cpu"), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], run, names
    server.shutdown()
    server.server_close()


def request(port: int, method: str, path: str, body: bytes | dict | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    connection.request(method, path, body=data)
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    kind = response.getheader("Content-Type", "")
    return response.status, json.loads(payload) if "json" in kind else payload


def decode_data_url(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_page_and_info(served):
    port, _, names = served
    status, page = request(port, "GET", "/")
    assert status == 200 and b"What CMP learned" in page and b"/static/app.js" in page
    assert b"http" not in page.replace(b"http-equiv", b"")  # nothing from elsewhere
    status, script = request(port, "GET", "/static/app.js")
    assert status == 200 and b"/api/annotate" in script
    status, info = request(port, "GET", "/api/info")
    assert status == 200 and info["gallery"] == names and info["device"] == "cpu"


def test_gallery_propagate_annotate_gif(served):
    port, _, names = served
    status, image = request(port, "POST", "/api/gallery", {"name": names[0]})
    assert status == 200 and (image["width"], image["height"]) == (64, 48)
    status, png = request(port, "GET", f"/api/image/{image['id']}")
    assert status == 200 and np.asarray(Image.open(io.BytesIO(png))).shape == (48, 64, 3)
    body = {"id": image["id"], "arrows": [[10, 20, 5.0, 0.0]]}
    status, moved = request(port, "POST", "/api/propagate", body)
    assert status == 200 and moved["latency_ms"] > 0
    assert decode_data_url(moved["flow_png"]).shape == (48, 64, 3)
    body = {"id": image["id"], "positive": [[10, 20]], "negative": [[50, 20]]}
    status, mask = request(port, "POST", "/api/annotate", body)
    binary = decode_data_url(mask["mask_png"])
    assert status == 200 and set(np.unique(binary)) <= {0, 255}
    assert mask["area"] == int((binary == 255).sum()) > 0  # the peak itself is always kept
    status, gif = request(port, "POST", "/api/gif", {"ids": [image["id"], moved["next_id"]]})
    assert status == 200 and Image.open(io.BytesIO(gif)).n_frames == 2


def test_upload_scales_a_large_photo_down(served):
    port = served[0]
    photo = np.random.default_rng(0).integers(0, 256, (600, 1024, 3), dtype=np.uint8)
    status, reply = request(port, "POST", "/api/upload", png_bytes(photo))
    assert status == 200 and (reply["width"], reply["height"]) == (512, 300)
    assert "scaled from 1024x600" in reply["note"]


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (the pixels are never there)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"%PDF-1.4 not an image", 400, "not an image"),
        (huge_png_header(100_000, 100_000), 400, "the limit is 40 MP"),
        (huge_png_header(8_000, 6_000), 400, "image is 8000x6000 (48 MP); the limit is 40 MP"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, 400, "not an image"),
    ],
)
def test_bad_uploads_get_a_message_and_the_server_goes_on(served, body, status, message):
    port = served[0]
    got, reply = request(port, "POST", "/api/upload", body)
    assert got == status and message in reply["error"]
    assert request(port, "GET", "/api/info")[0] == 200


def test_an_oversized_body_is_refused_unread(served):
    connection = http.client.HTTPConnection("127.0.0.1", served[0], timeout=30)
    connection.putrequest("POST", "/api/upload")
    connection.putheader("Content-Length", str(200 * 2**20))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and b"the limit is 20 MiB" in response.read()
    connection.close()


def test_gallery_names_outside_the_run_are_refused(served, tmp_path):
    port, run, _ = served
    outside = tmp_path / "secret.png"
    outside.write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    (run / "gallery" / "evil.png").symlink_to(outside)
    for name in ("../config.yaml", "../../secret.png", "/etc/passwd", "evil.png", "nothere.png"):
        status, reply = request(port, "POST", "/api/gallery", {"name": name})
        assert status == 404 and name in reply["error"], (name, reply)
    assert (
        "outside the run folder"
        in request(port, "POST", "/api/gallery", {"name": "evil.png"})[1]["error"]
    )


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/api/propagate", {"id": "nope", "arrows": []}, "unknown image id"),
        ("/api/propagate", b"{not json", "not JSON"),
        ("/api/annotate", {"id": "nope"}, "unknown image id"),
        ("/api/gallery", {"name": ["not", "a", "name"]}, "is not a gallery file name"),
        ("/api/gif", {"ids": []}, "ids must be a list"),
        ("/api/nothing", {}, "no endpoint"),
    ],
)
def test_bad_requests_are_answered_in_one_line(served, path, body, message):
    status, reply = request(served[0], "POST", path, body)
    assert 400 <= status < 500 and message in reply["error"]


def test_arrow_outside_the_image_is_refused(served):
    port, _, names = served
    image = request(port, "POST", "/api/gallery", {"name": names[0]})[1]
    status, reply = request(
        port, "POST", "/api/propagate", {"id": image["id"], "arrows": [[99, 1, 1, 1]]}
    )
    assert status == 400 and "outside 64x48" in reply["error"]


def test_another_methods_checkpoint_is_refused_by_the_command(tmp_path, capsys):
    run = write_run(tmp_path / "cpfs", CPFSModule(backbone="resnet18"), method="cpfs")
    with pytest.raises(RunError, match="'cpfs' run"):
        build_state(run, device="cpu")
    assert main(["serve", "--run", str(run), "--port", "0"]) == 2
    assert "serve needs a CMP run" in capsys.readouterr().err


def test_command_serves_on_loopback(tmp_path):
    run = write_run(tmp_path / "run")
    process = subprocess.Popen(
        [sys.executable, "-m", "models.serve", "serve", "--run", str(run), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert "on http://127.0.0.1:" in line, line
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        assert request(port, "GET", "/")[0] == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_gallery_export_takes_validation_frames_once(tmp_path):
    index = write_shards(make_set(tmp_path / "videos", 4), tmp_path / "shards", val_fraction=0.5)
    val = sum(s["n_samples"] for s in index["shards"] if s["split"] == "val")
    run = tmp_path / "run"
    run.mkdir()
    config = {"data": {"kwargs": {"index_paths": [str(tmp_path / "shards" / "index.json")]}}}
    names = export_gallery(run, config, count=3)
    assert len(names) == min(3, val) > 0 and all(n.startswith("val") for n in names)
    (tmp_path / "shards" / "index.json").unlink()  # a second start reads the run folder only
    assert export_gallery(run, config, count=3) == names
    assert (
        export_gallery(tmp_path / "empty", {"data": {"kwargs": {"index_paths": ["/nope"]}}}) == []
    )
