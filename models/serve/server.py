"""The web page's server: standard library HTTP, JSON endpoints, one static page (no CDN).

``ThreadingHTTPServer`` answers; model calls are serialised by a lock (one engine). Endpoints:

=========================  ===================================================================
``GET /``                  the page (``static/index.html``; ``/static/app.js``, ``style.css``)
``GET /api/info``          run, step, device, gallery names, limits
``POST /api/gallery``      ``{"name"}`` → a gallery frame becomes the current image
``POST /api/upload``       the file's bytes → the current image (``images.decode_image``)
``GET /api/image/<id>``    an image the session holds, as PNG
``POST /api/propagate``    ``{"id", "arrows": [[x, y, dx, dy], ...]}`` → flow picture, next frame
``POST /api/annotate``     ``{"id", "positive": [[x, y]], "negative": [[x, y]]}`` → mask
``POST /api/gif``          ``{"ids": [...]}`` → the frames as a looping GIF
=========================  ===================================================================

Every refused request gets a JSON ``{"error": "<one line>"}`` with a 4xx status and the server
keeps running; an unexpected error is logged and answered 500. Images live in memory under
random ids (the last ``MAX_IMAGES``); files are read only from the run folder's gallery
(``models.serve.gallery``) and the package's static folder.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
from collections import OrderedDict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from models.serve.engine import CMPEngine, guidance_array
from models.serve.gallery import GalleryError, gallery_names, gallery_path
from models.serve.images import (
    MAX_PIXELS,
    MAX_SIDE,
    MAX_UPLOAD_BYTES,
    ImageError,
    decode_image,
    encode_gif,
    encode_png,
    flow_picture,
    mask_picture,
)

__all__ = ["MAX_IMAGES", "RequestError", "ServeState", "make_server"]

log = logging.getLogger(__name__)

MAX_IMAGES = 64
MAX_GIF_FRAMES = 60
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}


class RequestError(ValueError):
    """A request the server refuses, with its HTTP status."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


def _data_url(array: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(array)).decode("ascii")


class ServeState:
    """What the server holds: the engine, the run folder, the session's images by id."""

    def __init__(self, engine: CMPEngine, run_dir: Path, info: dict[str, Any]) -> None:
        self.engine, self.run_dir, self.info = engine, run_dir, info
        self.images: OrderedDict[str, np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    def add_image(self, image: np.ndarray) -> str:
        key = secrets.token_hex(8)
        with self.lock:
            self.images[key] = image
            while len(self.images) > MAX_IMAGES:
                self.images.popitem(last=False)
        return key

    def image(self, key: Any) -> np.ndarray:
        with self.lock:
            if not isinstance(key, str) or key not in self.images:
                raise RequestError(f"unknown image id {key!r}: choose an image again")
            return self.images[key]

    def describe(self, image: np.ndarray, note: str = "") -> dict[str, Any]:
        return {"id": self.add_image(image), "width": image.shape[1], "height": image.shape[0]} | (
            {"note": note} if note else {}
        )

    # ------------------------------------------------------------------ operations

    def api_info(self) -> dict[str, Any]:
        limits = {"max_upload_mib": MAX_UPLOAD_BYTES // 2**20, "max_mp": MAX_PIXELS // 10**6}
        limits["max_side"] = MAX_SIDE
        return self.info | {"gallery": gallery_names(self.run_dir), "limits": limits}

    def api_gallery(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            path = gallery_path(self.run_dir, body.get("name"))
        except GalleryError as error:
            raise RequestError(str(error), HTTPStatus.NOT_FOUND) from None
        image, note = decode_image(path.read_bytes())
        return self.describe(image, note)

    def api_upload(self, data: bytes) -> dict[str, Any]:
        image, note = decode_image(data)
        return self.describe(image, note)

    def api_propagate(self, body: dict[str, Any]) -> dict[str, Any]:
        image = self.image(body.get("id"))
        arrows = guidance_array(body.get("arrows") or [], image.shape[:2])
        with self.lock:
            prediction = self.engine.propagate(image, arrows)
        picture = flow_picture(prediction.flow, arrows)
        reply = self.describe(prediction.next_frame)
        return {
            "flow_png": _data_url(picture),
            "next_png": _data_url(prediction.next_frame),
            "next_id": reply["id"],
            "latency_ms": round(1000 * prediction.latency_s, 1),
            "max_flow_px": round(float(np.hypot(*prediction.flow.transpose(2, 0, 1)).max()), 2),
        }

    def api_annotate(self, body: dict[str, Any]) -> dict[str, Any]:
        image = self.image(body.get("id"))
        positive = [_point(p) for p in body.get("positive") or []]
        negative = [_point(p) for p in body.get("negative") or []]
        with self.lock:
            result = self.engine.annotate(image, positive, negative)
        mask = result.mask.astype(np.uint8) * 255
        return {
            "overlay_png": _data_url(mask_picture(image, result.mask)),
            "mask_png": _data_url(mask),
            "area": int(result.mask.sum()),
            "latency_ms": round(1000 * result.latency_s, 1),
        }

    def api_gif(self, body: dict[str, Any]) -> bytes:
        ids = body.get("ids") or []
        if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_GIF_FRAMES:
            raise RequestError(f"ids must be a list of 1 to {MAX_GIF_FRAMES} image ids")
        frames = [self.image(key) for key in ids]
        if len({f.shape for f in frames}) != 1:
            raise RequestError("the frames of a sequence must share one size")
        return encode_gif(frames)


def _point(value: Any) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise RequestError(f"a click is [x, y], got {value!r}")
    return float(value[0]), float(value[1])


class Handler(BaseHTTPRequestHandler):
    """Routes requests to the :class:`ServeState` on ``self.server.state``."""

    server_version = "motion-ssl-serve/1"

    @property
    def state(self) -> ServeState:
        return self.server.state  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json")

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_UPLOAD_BYTES:
            self.close_connection = True  # the unread body must not be parsed as a request
            raise RequestError(
                f"request is {length / 2**20:.1f} MiB; the limit is "
                f"{MAX_UPLOAD_BYTES // 2**20} MiB",
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            )
        return self.rfile.read(length)

    def _json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self._body() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RequestError("request body is not JSON") from None
        if not isinstance(body, dict):
            raise RequestError("request body must be a JSON object")
        return body

    def _answer(self, work: Any) -> None:
        try:
            work()
        except (RequestError, ImageError, ValueError, TypeError) as error:
            status = getattr(error, "status", HTTPStatus.BAD_REQUEST)
            self._json(status, {"error": str(error).splitlines()[0] if str(error) else "bad input"})
        except Exception as error:  # noqa: BLE001 - the server must keep answering
            log.exception("request %s failed", self.path)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {error}"})

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._answer(self._post)

    def _get(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in STATIC:
            name, content_type = STATIC[path]
            data = resources.files("models.serve").joinpath("static", name).read_bytes()
            self._send(HTTPStatus.OK, data, content_type)
        elif path == "/api/info":
            self._json(HTTPStatus.OK, self.state.api_info())
        elif path.startswith("/api/image/"):
            image = self.state.image(path.removeprefix("/api/image/"))
            self._send(HTTPStatus.OK, encode_png(image), "image/png")
        else:
            raise RequestError(f"no page at {path}", HTTPStatus.NOT_FOUND)

    def _post(self) -> None:
        path, state = self.path.split("?", 1)[0], self.state
        if path == "/api/upload":
            self._json(HTTPStatus.OK, state.api_upload(self._body()))
            return
        routes = {
            "/api/gallery": state.api_gallery,
            "/api/propagate": state.api_propagate,
            "/api/annotate": state.api_annotate,
        }
        if path == "/api/gif":
            self._send(HTTPStatus.OK, state.api_gif(self._json_body()), "image/gif")
        elif path in routes:
            self._json(HTTPStatus.OK, routes[path](self._json_body()))
        else:
            raise RequestError(f"no endpoint at {path}", HTTPStatus.NOT_FOUND)


def make_server(
    state: ServeState, host: str = "127.0.0.1", port: int = 8000
) -> ThreadingHTTPServer:
    """The HTTP server for ``state`` (port 0: any free port; ``server.server_address``)."""
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.state = state  # type: ignore[attr-defined]
    return server
