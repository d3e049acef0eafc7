"""``ltx2-edge serve`` as a real process: on a non-loopback address it prints a token once and requires it; after
``kill -9`` mid-job and a restart on the same data directory the job runs again to a valid clip, with no
temporary file left; ``ltx2-edge submit --wait`` drives it from the command line; SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import httpx
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """One ``ltx2-edge serve`` process; its stderr goes to a file the test reads."""

    def __init__(self, tiny_dir: Path, data: Path, log: Path, host: str, token: str | None = None) -> None:
        self.port, self.log = _free_port(), log
        cmd = [sys.executable, "-m", "ltx2_edge", "serve", "--checkpoint-path", str(tiny_dir / "ltx2.safetensors"),
               "--gemma-root", str(tiny_dir / "gemma"), "--budget", "1GiB", "--host", host, "--port", str(self.port),
               "--data-dir", str(data), "--max-attempts", "2", "--log-level", "warning"]  # fmt: skip
        if token:
            cmd += ["--token", token]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "LTX2_EDGE_TOKEN": ""}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, headers: dict, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/health", headers=headers, timeout=2).json()["status"] in ("ready", "busy"):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"not ready after {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _wait_for(client: httpx.Client, vid: str, done, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        video = client.get(f"/v1/videos/{vid}").json()
        if done(video):
            return video
        time.sleep(0.05)
    raise AssertionError(f"timed out; last: {video}")


def _check_clip(path: Path) -> None:
    with av.open(str(path)) as mp4:
        assert {s.type for s in mp4.streams} == {"video", "audio"}
        assert sum(1 for _ in mp4.decode(video=0)) == 9


def test_kill_9_mid_job_then_restart_reruns_it(tiny_dir, tmp_path):
    data = tmp_path / "data"
    first = Served(tiny_dir, data, tmp_path / "first.log", host="0.0.0.0")
    try:
        deadline = time.monotonic() + 30
        while not (match := re.search(r"Authorization: Bearer (\S+)'", first.log.read_text())):
            assert time.monotonic() < deadline and first.proc.poll() is None, first.log.read_text()
            time.sleep(0.05)
        token = match.group(1)
        auth = {"Authorization": f"Bearer {token}"}
        first.wait_ready(auth)
        assert first.log.read_text().count(token) == 1  # printed once
        assert httpx.get(first.url + "/v1/videos").status_code == 401
        with httpx.Client(base_url=first.url, headers=auth, timeout=30) as client:
            # 20 % is the 5th of 40 steps (10 % after the text, 80 % over the steps): the kill lands with 35 to go.
            body = {"prompt": "survives a crash", "size": "64x64", "num_frames": 9, "num_inference_steps": 40}
            vid = client.post("/v1/videos", json=body).json()["id"]
            running = _wait_for(client, vid, lambda v: v["status"] == "in_progress" and v["progress"] >= 20)
            assert running["attempts"] == 1
        stray = data / "outputs" / f".{vid}.mp4.partial-{first.proc.pid}-dead.mp4"
        stray.write_bytes(b"what a killed MP4 writer leaves")
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    finally:
        first.stop()

    second = Served(tiny_dir, data, tmp_path / "second.log", host="127.0.0.1", token=token)
    try:
        second.wait_ready(auth)
        assert not stray.exists()  # startup removed what the killed process left
        with httpx.Client(base_url=second.url, headers=auth, timeout=30) as client:
            video = _wait_for(client, vid, lambda v: v["status"] in ("completed", "failed", "cancelled"))
            assert video["status"] == "completed" and video["attempts"] == 2, video
            clip = tmp_path / "rerun.mp4"
            clip.write_bytes(client.get(f"/v1/videos/{vid}/content").content)
            _check_clip(clip)
        leftovers = [p.name for d in ("outputs", "uploads") for p in (data / d).iterdir() if ".partial-" in p.name]
        assert leftovers == []

        out = tmp_path / "submitted.mp4"
        cmd = [sys.executable, "-m", "ltx2_edge", "submit", "--server", second.url, "--token", token, "--prompt",
               "from the command line", "--size", "64x64", "--num-frames", "9", "--num-inference-steps", "2",
               "--wait", "--output-path", str(out)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["status"] == "completed"
        assert "100%" in done.stderr and f"wrote {out}" in done.stderr  # the progress bar reached the end
        _check_clip(out)
        bad = subprocess.run([*cmd[:10], "--size", "65x64"], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "width=65 is not allowed" in bad.stderr

        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(30) in (-signal.SIGTERM, 128 + signal.SIGTERM)  # in order, then by the signal
        assert "ltx2-edge serve: stopped" in second.log.read_text()
    finally:
        second.stop()
