"""Admission and the HTTP contract, on a live server over the tiny model with its worker not started (jobs only
queue): every bad input, size, queue, idempotency, auth, host and origin case answers the right status with one
message, and a refused request leaves nothing behind (no job, no upload)."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from ltx2_edge.checkpoint.names import UPSAMPLER_FILE
from ltx2_edge.pipeline import RunSettings
from ltx2_edge.service.app import create_app
from ltx2_edge.service.auth import LOOPBACK_NAMES
from ltx2_edge.service.core import ServiceConfig, VideoService
from ltx2_edge.service.engine import Engine, EngineConfig
from ltx2_edge.service.live import LiveServer

SMALL = {"size": "64x64", "num_frames": 9, "num_inference_steps": 2}


def _png(size: tuple[int, int] = (64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def engine(tiny_dir: Path) -> Engine:
    settings = RunSettings(budget=2**30, spatial_upsampler_path=tiny_dir / UPSAMPLER_FILE)
    eng = Engine(EngineConfig(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", settings))
    yield eng
    eng.close()


@pytest.fixture
def serve(tmp_path, engine):
    """``serve(**config)`` -> (service, httpx client on its live server); the worker never starts."""
    started = []

    def make(token: str | None = None, hosts: tuple[str, ...] | None = LOOPBACK_NAMES, attach: bool = True, **cfg):
        service = VideoService(ServiceConfig(tmp_path / f"data{len(started)}", **cfg))
        if attach:
            service.attach_engine(engine, start_worker=False)
        server = LiveServer(create_app(service, token=token, allowed_hosts=hosts)).start()
        client = httpx.Client(base_url=server.url, timeout=30)
        started.append((service, server, client))
        return service, client

    yield make
    for service, server, client in started:
        client.close()
        server.stop()
        service.close()


def _one_error(res: httpx.Response, status: int) -> dict:
    assert res.status_code == status, res.text
    err = res.json()["error"]
    assert set(res.json()) == {"error"} and err["message"] and "\n" not in err["message"]
    return err


BAD_INPUTS = [
    ({"prompt": ""}, "prompt", "prompt='' is not allowed: a non-empty text"),
    ({}, "prompt", "prompt=None is not allowed: required"),
    ({"prompt": "p", "size": "65x64"}, "size", "width=65 is not allowed: a multiple of 32"),
    ({"prompt": "p", "size": "big"}, "size", "size='big' is not allowed: WIDTHxHEIGHT"),
    ({"prompt": "p", "num_frames": 10}, "num_frames", "nearest: 9 or 17"),
    ({"prompt": "p", "seed": -1}, "seed", "seed=-1 is not allowed: an integer from 0 to"),
    ({"prompt": "p", "seed": "ten"}, "seed", "seed='ten' is not allowed: an integer"),
    ({"prompt": "p", "pipeline": "turbo"}, "pipeline", "one-stage or two-stage or distilled or distilled-one-stage"),
    ({"prompt": "p", "guidance": "max"}, "guidance", "guidance='max' is not allowed: cfg or full"),
    ({"prompt": "p", "audio_channels": 3}, "audio_channels", "1 (mono) or 2 (stereo)"),
    ({"prompt": "p", "num_inference_steps": 0}, "num_inference_steps", "at least 1"),
    ({"prompt": "p", "frame_rate": 0}, "frame_rate", "a positive number of frames per second"),
    ({"prompt": "p", "seconds": 4, "num_frames": 9}, "seconds", "unset when num_frames is given"),
    ({"prompt": "p", "pipeline": "distilled-one-stage", "num_inference_steps": 4}, "num_inference_steps", "8"),
    ({"prompt": "p", "colour": "red"}, "colour", "no such field (the fields are prompt, model, size"),
    ({"prompt": "p", "model": "sora-2"}, "model", "model='sora-2' is not allowed: ltx-2"),
    ({"prompt": "p", "images": [{"data": "***", "frame_idx": 0}]}, "images[0].data", "base64 of an image file"),
    ({"prompt": "p", "images": [{"data": base64.b64encode(b"text").decode()}]}, "images[0]", "PNG, JPEG, WebP"),
    (
        {"prompt": "p", **SMALL, "images": [{"data": base64.b64encode(_png()).decode(), "frame_idx": 99}]},
        "images",
        "99 1.0",
    ),
    ({"prompt": "p", "images": [{"frame_idx": 0}]}, "images[0]", "exactly one of data (base64, in JSON) or file"),
    ({"prompt": "p", "loras": [{"name": "style"}]}, "loras[0]", "this server was started without --lora-dir"),
    ({"prompt": "a red kite " * 400}, "prompt", "at most 1024 Gemma tokens"),
]


@pytest.mark.parametrize(
    "body, param, message", BAD_INPUTS, ids=[b[1] + "-" + str(i) for i, b in enumerate(BAD_INPUTS)]
)
def test_bad_input_is_refused_with_one_message_and_leaves_nothing(serve, body, param, message):
    service, client = serve()
    err = _one_error(client.post("/v1/videos", json=body), 422)
    assert err["param"] == param and message in err["message"], err
    assert str(service.files.root) not in err["message"]  # no server path reaches a client
    assert service.store.counts() == {} and list(service.files.uploads.iterdir()) == []


def test_impossible_budget_names_the_smallest_budget(serve):
    service, client = serve()
    err = _one_error(client.post("/v1/videos", json={"prompt": "p", "size": "2048x2048", "num_frames": 257}), 422)
    assert err["param"] == "budget" and "Smallest budget that works for this request:" in err["message"]
    plan = _one_error(client.get("/v1/plan", params={"size": "2048x2048", "num_frames": 257}), 422)
    assert plan["message"] == err["message"]
    assert service.store.counts() == {}


def test_body_shape_errors(serve):
    _, client = serve()
    _one_error(client.post("/v1/videos", content=b"{not json", headers={"Content-Type": "application/json"}), 400)
    assert "the body must be a JSON object" in _one_error(client.post("/v1/videos", json=["p"]), 422)["message"]
    _one_error(client.post("/v1/videos", content=b"prompt", headers={"Content-Type": "text/plain"}), 415)


def test_oversized_bodies_and_images_are_refused(serve):
    service, client = serve(max_body_bytes=64 * 1024, max_image_bytes=8 * 1024)
    big = json.dumps({"prompt": "x" * 70_000}).encode()
    err = _one_error(client.post("/v1/videos", content=big, headers={"Content-Type": "application/json"}), 413)
    assert "--max-body-mb" in err["message"]

    def chunks():  # no Content-Length: refused while it streams in
        for _ in range(20):
            yield b"x" * 8192

    _one_error(client.post("/v1/videos", content=chunks(), headers={"Content-Type": "application/json"}), 413)
    image = base64.b64encode(_png((256, 256)) + b"\0" * 9000).decode()
    err = _one_error(client.post("/v1/videos", json={"prompt": "p", "images": [{"data": image}]}), 413)
    assert err["param"] == "images[0]" and "--max-image-mb" in err["message"]
    assert service.store.counts() == {} and list(service.files.uploads.iterdir()) == []


def test_twenty_concurrent_posts_are_held_within_the_queue_limit(serve):
    service, client = serve(queue_limit=5)

    def post(i: int) -> httpx.Response:
        return client.post("/v1/videos", json={"prompt": f"clip {i}", **SMALL})

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(post, range(20)))
    accepted = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code == 429]
    assert len(accepted) == 5 and len(refused) == 15
    for r in refused:
        assert (
            int(r.headers["Retry-After"]) >= 1 and "the queue is full (5 jobs waiting" in r.json()["error"]["message"]
        )
    assert service.store.counts() == {"queued": 5}
    assert len({r.json()["id"] for r in accepted}) == 5


def test_idempotency_key(serve):
    service, client = serve()
    body = {"prompt": "same", **SMALL}
    first = client.post("/v1/videos", json=body, headers={"Idempotency-Key": "robot-42"})
    again = client.post("/v1/videos", json=body, headers={"Idempotency-Key": "robot-42"})
    assert first.status_code == again.status_code == 200 and first.json()["id"] == again.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = client.post("/v1/videos", json={**body, "seed": 1}, headers={"Idempotency-Key": "robot-42"})
    assert "used for job" in _one_error(other, 409)["message"]
    assert service.store.counts() == {"queued": 1}


def test_multipart_create_as_the_openai_client_sends_it(serve):
    service, client = serve()
    form = {
        "prompt": "from a form",
        "size": "64x64",
        "num_frames": "9",
        "num_inference_steps": "2",
        "seed": "3",
        "images": json.dumps([{"file": "key", "frame_idx": 8, "strength": 0.5}]),
    }
    files = {"input_reference": ("ref.png", _png(), "image/png"), "key": ("k.png", _png(), "image/png")}
    res = client.post("/v1/videos", data=form, files=files)
    assert res.status_code == 200, res.text
    video = res.json()
    assert video["object"] == "video" and video["status"] == "queued" and video["size"] == "64x64"
    assert [(i["frame_idx"], i["strength"]) for i in video["request"]["images"]] == [(0, 1.0), (8, 0.5)]
    names = sorted(p.name for p in service.files.uploads.iterdir())
    assert names == [f"{video['id']}-0.png", f"{video['id']}-1.png"]  # generated names, not the client's
    assert video["seconds"] == "0.38" and video["request"]["seed"] == 3


def test_lookups_cancel_delete_and_content_states(serve):
    service, client = serve()
    video = client.post("/v1/videos", json={"prompt": "p", **SMALL}).json()
    vid = video["id"]
    assert client.get(f"/v1/videos/{vid}").json()["status"] == "queued"
    assert client.get("/v1/videos", params={"limit": 1}).json()["data"][0]["id"] == vid
    assert "is queued" in _one_error(client.get(f"/v1/videos/{vid}/content"), 409)["message"]
    _one_error(client.get("/v1/videos/..%2F..%2Fjobs.sqlite3/content"), 404)
    _one_error(client.get("/v1/videos/video_" + "0" * 32), 404)
    assert client.post(f"/v1/videos/{vid}/cancel").json()["status"] == "cancelled"
    assert "already ended" in _one_error(client.post(f"/v1/videos/{vid}/cancel"), 409)["message"]
    assert client.delete(f"/v1/videos/{vid}").json() == {"id": vid, "object": "video.deleted", "deleted": True}
    _one_error(client.get(f"/v1/videos/{vid}"), 404)
    _one_error(client.get("/v1/videos", params={"limit": 1000}), 422)
    _one_error(client.get("/nowhere"), 404)


def test_plan_answers_what_the_plan_command_answers(serve):
    _, client = serve()
    res = client.get("/v1/plan", params={"size": "64x64", "num_frames": "9", "num_inference_steps": "2"})
    assert res.status_code == 200, res.text
    doc = res.json()
    assert "text_encode" in doc["text"] and "denoise forwards:" in doc["text"] and "quantization:" in doc["text"]
    assert {s["name"] for s in doc["plan"]["stages"]} >= {"text_encode", "denoise", "decode"}
    _one_error(client.get("/v1/plan", params={"num_frames": "10"}), 422)


def test_health_starting_then_ready(serve, engine):
    service, client = serve(attach=False)
    res = client.get("/health")
    assert res.status_code == 503 and res.json()["status"] == "starting" and res.headers["Retry-After"] == "5"
    err = _one_error(client.post("/v1/videos", json={"prompt": "p"}), 503)
    assert "starting" in err["message"]
    service.attach_engine(engine, start_worker=False)
    assert client.get("/health").json()["status"] == "ready"
    client.post("/v1/videos", json={"prompt": "p", **SMALL})
    state = client.get("/health").json()
    assert state["status"] == "busy" and state["queued"] == 1


def test_token_is_required_and_compared(serve):
    _, client = serve(token="s3cret", hosts=None)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        res = client.get("/v1/videos", headers=headers)
        assert "Authorization: Bearer" in _one_error(res, 401)["message"]
        assert res.headers["WWW-Authenticate"] == "Bearer"
    _one_error(client.post("/v1/videos", json={"prompt": "p"}), 401)
    assert client.get("/v1/videos", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/health").status_code == 200 and client.get("/").status_code == 200  # no secrets there


def test_host_and_origin_guards_and_no_cors(serve):
    _, client = serve()
    assert (
        "not this server's name"
        in _one_error(client.get("/v1/videos", headers={"Host": "evil.example"}), 403)["message"]
    )
    evil = {"Origin": "http://evil.example"}
    assert "CORS is off" in _one_error(client.post("/v1/videos", json={"prompt": "p"}, headers=evil), 403)["message"]
    own = {"Origin": str(client.base_url).rstrip("/")}
    assert client.post("/v1/videos", json={"prompt": "p", **SMALL}, headers=own).status_code == 200
    preflight = client.options("/v1/videos", headers={**evil, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 405 and not any(h.lower().startswith("access-control") for h in preflight.headers)
    page = client.get("/")
    assert "Content-Security-Policy" in page.headers and "<form" in page.text
