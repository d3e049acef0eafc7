"""The service making real clips on the tiny model: the stock ``openai`` client creating, polling and downloading
one; server-sent events in order; a cancel honoured mid-denoise with nothing half-written; range requests; and
the web page in headless Chromium (submit, watch the progress, the video plays)."""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import av
import httpx
import pytest
from PIL import Image

from ltx2_edge.pipeline import RunSettings
from ltx2_edge.service.app import create_app
from ltx2_edge.service.auth import LOOPBACK_NAMES
from ltx2_edge.service.core import ServiceConfig, VideoService
from ltx2_edge.service.engine import Engine, EngineConfig
from ltx2_edge.service.live import LiveServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CLIP = {"num_frames": 9, "num_inference_steps": 2}


@pytest.fixture(scope="module")
def live(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    engine = Engine(EngineConfig(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", RunSettings(budget=2**30)))
    service = VideoService(ServiceConfig(tmp_path_factory.mktemp("serve"), poll_after_ms=100))
    service.attach_engine(engine)
    server = LiveServer(create_app(service, allowed_hosts=LOOPBACK_NAMES)).start()
    yield service, server
    server.stop()
    service.close()
    engine.close()


def _events(url: str, video_id: str, on_event=None) -> list[tuple[int, str, dict]]:
    """Every event of the job, read live from its stream until the terminal one."""
    out, block = [], {}
    with httpx.stream("GET", f"{url}/v1/videos/{video_id}/events", timeout=120) as res:
        assert res.status_code == 200 and res.headers["content-type"].startswith("text/event-stream")
        for line in res.iter_lines():
            if line.startswith(("id: ", "event: ", "data: ")):
                key, _, value = line.partition(": ")
                block[key] = value
            elif line == "" and "data" in block:
                event = (int(block["id"]), block["event"], json.loads(block["data"]))
                out.append(event)
                block = {}
                if on_event is not None:
                    on_event(event)
    return out


def _temporaries(service: VideoService) -> list[str]:
    return [
        p.name for d in (service.files.outputs, service.files.uploads) for p in d.iterdir() if ".partial-" in p.name
    ]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # openai marks its Videos API deprecated (Sora)
def test_openai_client_creates_polls_and_downloads(live, tmp_path):
    from openai import OpenAI

    service, server = live
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused-on-loopback", max_retries=0)
    frame = io.BytesIO()
    Image.new("RGB", (80, 64), (30, 120, 200)).save(frame, format="PNG")
    video = client.videos.create(
        prompt="a red kite over a beach",
        size="64x64",
        extra_body=CLIP,
        input_reference=("first.png", frame.getvalue(), "image/png"),
    )
    assert video.status == "queued" and video.object == "video" and video.size == "64x64"
    done = client.videos.poll(video.id)  # the server's openai-poll-after-ms paces it
    assert done.status == "completed" and done.progress == 100 and done.error is None
    assert done.completed_at >= done.created_at and done.expires_at > done.completed_at
    stages = [s["stage"] for s in done.model_extra["report"]["stages"]]
    assert stages == ["text_encode", "encode_image", "denoise", "decode"]  # the upload conditioned frame 0
    # The upload is gone once the job ended. The scheduler deletes it just after it marks the job completed
    # (Scheduler._finish), so a poll can land in between (on a loaded machine it did): a few seconds at most.
    deadline = time.monotonic() + 10
    while list(service.files.uploads.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(service.files.uploads.iterdir()) == []
    assert str(service.files.root) not in json.dumps(done.model_extra["report"])  # no server path for clients
    assert done.model_extra["report"]["output_path"] == f"<data-dir>/outputs/{video.id}.mp4"
    assert client.videos.retrieve(video.id).id == video.id
    assert video.id in [v.id for v in client.videos.list()]
    path = tmp_path / "clip.mp4"
    client.videos.download_content(video.id).write_to_file(path)
    with av.open(str(path)) as mp4:
        kinds = {s.type: s for s in mp4.streams}
        assert kinds["video"].codec_context.name == "h264" and kinds["audio"].codec_context.name == "aac"
        assert (kinds["video"].width, kinds["video"].height) == (64, 64)
        assert sum(1 for _ in mp4.decode(video=0)) == 9
    full = path.read_bytes()
    part = httpx.get(f"{server.url}/v1/videos/{video.id}/content", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == full[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(full)}"
    assert client.videos.delete(video.id).deleted
    assert not service.files.output_path(video.id).exists() and _temporaries(service) == []


def test_events_arrive_in_order(live):
    service, server = live
    video = httpx.post(
        f"{server.url}/v1/videos", json={"prompt": "waves", "size": "64x64", "num_frames": 9, "num_inference_steps": 4}
    ).json()
    events = _events(server.url, video["id"])
    ids = [e[0] for e in events]
    assert ids == list(range(1, len(ids) + 1))  # none lost, none repeated
    kinds = [e[1] for e in events]
    assert kinds[:3] == ["queued", "started", "stage"] and kinds[-1] == "completed"
    stages = [(k, d["stage"]) for _, k, d in events if k in ("stage", "stage_done")]
    assert [s for s in stages if s[1] != "decode" or s[0] == "stage_done"][:4] == [
        ("stage", "text_encode"),
        ("stage_done", "text_encode"),
        ("stage", "denoise"),
        ("stage_done", "denoise"),
    ]
    steps = [d for _, k, d in events if k == "step"]
    assert [s["step"] for s in steps] == [1, 2, 3, 4] and all(s["total"] == 4 for s in steps)
    assert steps[-1]["eta_seconds"] == 0 and all(s["eta_seconds"] >= 0 for s in steps)
    progress = [d["progress"] for _, _, d in events if "progress" in d]
    assert progress == sorted(progress) and progress[-1] == 100
    late = _events(server.url, video["id"])  # a listener after the end gets the whole story again
    assert [e[0] for e in late] == ids


def test_cancel_mid_denoise_leaves_nothing(live):
    service, server = live
    video = httpx.post(
        f"{server.url}/v1/videos",
        json={"prompt": "a long one", "size": "64x64", "num_frames": 9, "num_inference_steps": 64},
    ).json()
    vid = video["id"]

    def cancel_on_first_step(event):
        if event[1] == "step" and event[2]["step"] == 1:
            assert httpx.post(f"{server.url}/v1/videos/{vid}/cancel").json()["cancel_requested"]

    events = _events(server.url, vid, cancel_on_first_step)
    assert events[-1][1] == "cancelled"
    steps = [d["step"] for _, k, d in events if k == "step"]
    assert 1 <= steps[-1] < 64  # stopped between denoising steps, long before the end
    assert not any(k == "stage" and d["stage"] == "decode" for _, k, d in events)
    record = httpx.get(f"{server.url}/v1/videos/{vid}").json()
    assert record["status"] == "cancelled" and record["progress"] < 90
    assert httpx.get(f"{server.url}/v1/videos/{vid}/content").status_code == 409
    assert not service.files.output_path(vid).exists() and not service.files.report_path(vid).exists()
    assert _temporaries(service) == []


@pytest.mark.skipif(
    shutil.which("chromium") is None and not Path(CHROMIUM).exists(),
    reason="Chromium is not installed (scripts/test.sh installs Debian's chromium)",
)
def test_web_page_submits_shows_progress_and_plays_the_clip(live):
    from playwright.sync_api import sync_playwright

    service, server = live
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.url + "/")
            page.fill("textarea[name=prompt]", "a lighthouse at night, waves and wind")
            page.fill("input[name=size]", "64x64")
            page.fill("input[name=num_frames]", "9")
            page.fill("input[name=num_inference_steps]", "8")
            with page.expect_response(lambda r: r.url.endswith("/v1/videos") and r.request.method == "POST") as res:
                page.click("#submit")
            card = f'article[data-id="{res.value.json()["id"]}"]'  # earlier tests' clips are listed too
            page.evaluate(
                """(card) => { window.__seen = []; setInterval(() => { const c = document.querySelector(card);
                if (c) window.__seen.push([c.querySelector('progress').value, c.querySelector('.detail').textContent]);
                }, 10); }""",
                card,
            )
            page.wait_for_selector(f"{card} .status.completed", timeout=90_000)
            page.wait_for_function(
                """(card) => { const v = document.querySelector(card + ' video');
                return v && v.readyState >= 1 && v.duration > 0; }""",
                arg=card,
                timeout=30_000,
            )
            duration = page.evaluate("(card) => document.querySelector(card + ' video').duration", card)
            assert 0.3 <= duration <= 1.0  # 9 frames at 24 fps: 0.375 s of video (and its sound)
            page.evaluate(
                "(card) => { const v = document.querySelector(card + ' video'); v.muted = true; v.play(); }", card
            )
            page.wait_for_function(
                "(card) => { const v = document.querySelector(card + ' video'); return v.currentTime > 0 || v.ended; }",
                arg=card,
                timeout=10_000,
            )
            seen = page.evaluate("window.__seen")
            assert any(0 < value < 100 for value, _ in seen), seen[:20]  # the bar moved before the end
            assert any("step" in text or "decode" in text or "denoise" in text for _, text in seen)
            rows = page.locator(f"{card} table.report tr").all_inner_texts()
            assert [r.split("\t")[0] for r in rows] == ["stage", "text_encode", "denoise", "decode", "total"]
            assert errors == []
        finally:
            browser.close()
