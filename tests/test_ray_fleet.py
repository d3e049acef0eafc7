"""The service on Ray Serve, on a local Ray cluster this module starts (``ray.init``, two CPU generation
replicas, the tiny model): the stock ``openai`` client makes six clips and both replicas did work; a replica's
process killed mid-job has that job run again on the other one, to a valid MP4, with no temporary left and Ray
starting a replacement; the web page works through the Ray ingress.

Ray is the ``ray`` extra, which ``scripts/setup.sh --test`` installs: without it these tests fail (a skipped test
cannot fail) unless ``LTX2_EDGE_SKIP_RAY=1`` says this machine is not meant to run them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import av
import httpx
import pytest

from ltx2_edge.pipeline import RunSettings
from ltx2_edge.service.auth import LOOPBACK_NAMES
from ltx2_edge.service.config import ServiceConfig
from ltx2_edge.service.engine import EngineConfig

pytestmark = pytest.mark.slow
CLIP = {"num_frames": 9, "num_inference_steps": 2}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
# httpx's 5 s default is too short for a request the Serve proxy forwards while other tests load both cores (the
# /health behind it asks every replica): a late answer is not what these tests check.
HTTP_TIMEOUT = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fleet(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    if os.environ.get("LTX2_EDGE_SKIP_RAY") == "1":
        pytest.skip("LTX2_EDGE_SKIP_RAY=1: this machine does not run the Ray fleet tests")
    import ray  # no Ray: ImportError, a failure (scripts/setup.sh --test installs the ray extra)
    from ray import serve

    from ltx2_edge.service.ray.app import APP_NAME, build_application
    from ltx2_edge.service.ray.scale import FleetScale

    data = tmp_path_factory.mktemp("fleet")
    port = _free_port()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        engine = EngineConfig(
            tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", RunSettings(budget=2**30, device="cpu")
        )
        config = ServiceConfig(data, poll_after_ms=100, max_attempts=3)
        app = build_application(engine, config, FleetScale(2), token=None, allowed_hosts=LOOPBACK_NAMES)
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=5).json().get("status") in ("ready", "busy"):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("the fleet did not become ready in 180 s")
        yield url, data, serve
    finally:
        serve.shutdown()
        ray.shutdown()


def _temporaries(data: Path) -> list[str]:
    return [p.name for d in (data / "outputs", data / "uploads") for p in d.iterdir() if ".partial-" in p.name]


def _check_clip(path: Path) -> None:
    with av.open(str(path)) as mp4:
        kinds = {s.type: s for s in mp4.streams}
        assert kinds["video"].codec_context.name == "h264" and kinds["audio"].codec_context.name == "aac"
        assert sum(1 for _ in mp4.decode(video=0)) == 9


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # openai marks its Videos API deprecated (Sora)
def test_openai_client_six_clips_on_both_replicas(fleet, tmp_path):
    from openai import OpenAI

    url, data, _ = fleet
    client = OpenAI(base_url=f"{url}/v1", api_key="unused-on-loopback", max_retries=0)
    videos = [client.videos.create(prompt=f"clip {i}: waves", size="64x64", extra_body=CLIP) for i in range(6)]
    assert all(v.status == "queued" for v in videos)
    done = [client.videos.poll(v.id) for v in videos]
    assert [d.status for d in done] == ["completed"] * 6, [d.error for d in done]
    replicas = {d.model_extra["report"]["service"]["replica"] for d in done}
    assert len(replicas) == 2, replicas  # both replicas did work
    assert all(d.model_extra["plan"]["fleet"]["min_budget_bytes"] > 0 for d in done)  # admission's smallest budget
    client.videos.download_content(done[0].id).write_to_file(tmp_path / "clip.mp4")
    _check_clip(tmp_path / "clip.mp4")
    assert str(data) not in json.dumps(done[0].model_extra["report"])  # no server path for clients
    health = httpx.get(url + "/health", timeout=HTTP_TIMEOUT).json()
    assert {r["id"] for r in health["replicas"]} == replicas and health["status"] == "ready"
    assert _temporaries(data) == []


def test_killed_replica_reruns_its_job_elsewhere(fleet, tmp_path):
    url, data, serve = fleet
    body = {"prompt": "a long one", "size": "64x64", "num_frames": 9, "num_inference_steps": 60}
    vid = httpx.post(f"{url}/v1/videos", json=body, timeout=HTTP_TIMEOUT).json()["id"]
    killed: dict = {}
    kinds: list[str] = []
    with httpx.stream("GET", f"{url}/v1/videos/{vid}/events", timeout=120) as res:
        for line in res.iter_lines():
            if not line.startswith("event: "):
                continue
            kinds.append(line.removeprefix("event: "))
            if kinds[-1] == "step" and not killed:
                replicas = httpx.get(url + "/health", timeout=HTTP_TIMEOUT).json()["replicas"]
                holder = next(r for r in replicas if vid in r["jobs"])
                os.kill(holder["pid"], signal.SIGKILL)  # mid-denoise: the replica's process dies outright
                killed = holder
            if kinds[-1] in ("completed", "failed", "cancelled"):
                break
    assert killed and kinds[-1] == "completed", kinds
    assert kinds.count("started") == 2 and "queued" in kinds[kinds.index("step") :]  # re-queued, then run again
    video = httpx.get(f"{url}/v1/videos/{vid}", timeout=HTTP_TIMEOUT).json()
    assert video["status"] == "completed" and video["attempts"] == 2
    assert video["report"]["service"]["replica"] != killed["id"]
    (tmp_path / "clip.mp4").write_bytes(httpx.get(f"{url}/v1/videos/{vid}/content", timeout=HTTP_TIMEOUT).content)
    _check_clip(tmp_path / "clip.mp4")
    assert _temporaries(data) == []  # the dead writer's temporaries went with its job's re-run
    deadline = time.monotonic() + 90  # and Ray put a new replica in the dead one's place
    while time.monotonic() < deadline:
        states = serve.status().applications["ltx2-edge"].deployments["generation"].replica_states
        if states.get("RUNNING") == 2:
            break
        time.sleep(0.5)
    assert states.get("RUNNING") == 2, states


@pytest.mark.skipif(
    shutil.which("chromium") is None and not Path(CHROMIUM).exists(),
    reason="Chromium is not installed (scripts/test.sh installs Debian's chromium)",
)
def test_web_page_through_the_ray_ingress(fleet):
    from playwright.sync_api import sync_playwright

    url, _, _ = fleet
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url + "/")
            page.fill("textarea[name=prompt]", "a lighthouse at night, waves and wind")
            page.fill("input[name=size]", "64x64")
            page.fill("input[name=num_frames]", "9")
            page.fill("input[name=num_inference_steps]", "4")
            with page.expect_response(lambda r: r.url.endswith("/v1/videos") and r.request.method == "POST") as res:
                page.click("#submit")
            card = f'article[data-id="{res.value.json()["id"]}"]'
            page.wait_for_selector(f"{card} .status.completed", timeout=90_000)
            page.wait_for_function(
                """(card) => { const v = document.querySelector(card + ' video');
                return v && v.readyState >= 1 && v.duration > 0; }""",
                arg=card,
                timeout=30_000,
            )
            assert 0.3 <= page.evaluate("(card) => document.querySelector(card + ' video').duration", card) <= 1.0
            rows = page.locator(f"{card} table.report tr").all_inner_texts()
            assert [r.split("\t")[0] for r in rows] == ["stage", "text_encode", "denoise", "decode", "total"]
            assert errors == []
        finally:
            browser.close()
