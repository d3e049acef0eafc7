"""Per-clip overhead of ``ltx2-edge serve --ray --replicas 1`` against plain ``ltx2-edge serve`` on the same box.

Each round starts one server (its own process, localhost: plain first, then Ray, swapping the order every round so
drift does not favour either), waits for ``/health`` to say ready, runs ``--warmup`` clips (loads, compiles,
captures), then ``--clips`` clips one at a time: POST, then the job's event stream read until its terminal event,
so a clip's time is submit -> ``completed`` as a client sees it (HTTP, admission, the store, and for Ray the
dispatch to the replica and the events relayed back). The engine's own wall time for each clip (the report's
``service.wall_seconds``) is recorded too: their difference is what lies outside the engine. The answer:

    overhead = median(ray per-clip) / median(plain per-clip) - 1        (goal on one GPU: <= 3 %)

    python3 bench/ray_overhead.py --checkpoint-path F --gemma-root D --budget 32GiB --clips 6 --rounds 2 --out X.json
    # CPU, tiny model (what the CPU tests check it runs): --device cpu --size 64x64 --frames 9 --steps 4 --budget 1GiB

Needs the ray extra (``pip install '.[ray]'``). The Ray server starts a local Ray cluster of its own and stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from service_bench import PROMPTS, get_json, post_json  # bench/ beside this script: the same clients

READY_TIMEOUT_S = 600.0
TERMINAL = ("completed", "failed", "cancelled")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until_end(base: str, job_id: str) -> str:
    """Read the job's server-sent events until its terminal one; its kind."""
    with urllib.request.urlopen(f"{base}/v1/videos/{job_id}/events", timeout=3600) as stream:
        for raw in stream:
            line = raw.decode().strip()
            if line.startswith("event: ") and line.removeprefix("event: ") in TERMINAL:
                return line.removeprefix("event: ")
    raise RuntimeError(f"the event stream of {job_id} ended without a terminal event")


def _server(a: argparse.Namespace, mode: str, data: Path, port: int) -> subprocess.Popen:
    argv = [sys.executable, "-m", "ltx2_edge", "serve", "--checkpoint-path", str(a.checkpoint_path), "--gemma-root",
            str(a.gemma_root), "--budget", a.budget, "--port", str(port), "--data-dir", str(data),
            "--log-level", "warning"]  # fmt: skip
    if a.device:
        argv += ["--device", a.device]
    if mode == "ray":
        argv += ["--ray", "--replicas", "1"]
    # Its own session, so its Ray cluster's processes can be found and ended if it does not stop them itself.
    return subprocess.Popen(argv, start_new_session=True)


def _stop(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)  # the server alone: serve --ray stops its jobs, its app, its cluster
    try:
        server.wait(timeout=180)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=30)
    try:
        os.killpg(server.pid, signal.SIGKILL)  # whatever of its cluster outlived it
    except ProcessLookupError:
        pass


def _run(a: argparse.Namespace, mode: str, round_no: int) -> dict:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    data = Path(a.work) / f"{mode}-{round_no}"
    started = time.perf_counter()
    server = _server(a, mode, data, port)
    try:
        while True:
            try:
                if get_json(base + "/health").get("status") in ("ready", "busy"):
                    break
            except OSError:
                pass
            if server.poll() is not None or time.perf_counter() - started > READY_TIMEOUT_S:
                raise RuntimeError(f"{mode} did not become ready (rc {server.poll()})")
            time.sleep(0.2)
        ready_s = time.perf_counter() - started
        clips = []
        for i in range(a.warmup + a.clips):
            body = {"prompt": PROMPTS[i % len(PROMPTS)], "size": a.size, "num_frames": a.frames, "seed": 10 + i,
                    "num_inference_steps": a.steps}  # fmt: skip
            t0 = time.perf_counter()
            job = post_json(base + "/v1/videos", body)
            kind = _until_end(base, job["id"])
            wall = time.perf_counter() - t0
            video = get_json(f"{base}/v1/videos/{job['id']}")
            if kind != "completed":
                raise RuntimeError(f"{mode}: clip {i} {kind}: {video.get('error')}")
            engine = (video.get("report") or {}).get("service", {}).get("wall_seconds")
            clips.append({"clip": i, "warmup": i < a.warmup, "client_s": round(wall, 4), "engine_s": engine,
                          "replica": (video.get("report") or {}).get("service", {}).get("replica")})  # fmt: skip
        timed = [c for c in clips if not c["warmup"]]
        return {"mode": mode, "round": round_no, "ready_s": round(ready_s, 3),
                "median_client_s": statistics.median(c["client_s"] for c in timed),
                "median_engine_s": statistics.median(c["engine_s"] for c in timed),
                "median_outside_engine_s": statistics.median(c["client_s"] - c["engine_s"] for c in timed),
                "clips": clips}  # fmt: skip
    finally:
        _stop(server)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint-path", type=Path, required=True)
    ap.add_argument("--gemma-root", type=Path, required=True)
    ap.add_argument("--budget", default="32GiB")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: the server's default)")
    ap.add_argument("--size", default="512x288")
    ap.add_argument("--frames", type=int, default=97)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--clips", type=int, default=6, help="timed clips per server, one at a time")
    ap.add_argument("--warmup", type=int, default=1, help="clips run first and not timed")
    ap.add_argument("--rounds", type=int, default=2, help="plain and Ray servers started this many times each")
    ap.add_argument("--work", default="/tmp/ray-overhead")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    Path(a.work).mkdir(parents=True, exist_ok=True)
    runs = []
    for r in range(a.rounds):
        for mode in ("plain", "ray") if r % 2 == 0 else ("ray", "plain"):
            runs.append(_run(a, mode, r))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "clips"}), flush=True)

    def median(mode: str, key: str) -> float:
        return statistics.median(c[key] for run in runs if run["mode"] == mode for c in run["clips"] if not c["warmup"])

    plain, ray = median("plain", "client_s"), median("ray", "client_s")
    summary = {"plain_per_clip_s": round(plain, 4), "ray_per_clip_s": round(ray, 4),
               "ratio": round(ray / plain, 4), "overhead_percent": round(100 * (ray / plain - 1), 2),
               "plain_engine_s": round(median("plain", "engine_s"), 4),
               "ray_engine_s": round(median("ray", "engine_s"), 4),
               "settings": {k: str(v) for k, v in vars(a).items() if k != "out"}}  # fmt: skip
    a.out.write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
