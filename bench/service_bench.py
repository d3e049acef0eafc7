"""Clips per minute from ``ltx2-edge serve`` against the other ways to make N clips on the same box.

Modes, each in this one script so a device call runs them side by side:
- ``serve``: starts ``ltx2-edge serve`` (its own process, localhost), waits for ``/health`` to say ready, submits N
  W1 clips at once over HTTP, polls until every one has ended; per clip: submitted -> completed seconds; steady
  per-clip time = (last completion - first completion) / (N - 1); the reports' ``batch`` blocks say what was held.
- ``generator``: one long-lived ``Generator``, N clips one after the other (``generate`` per clip).
- ``phased``: one ``Generator``, the N clips as one batch through ``phased.run_phased`` (the service's engine path
  without HTTP or the job store); ``--check`` then regenerates the first clips one by one with ``generate`` (a fresh
  capture each) and says whether the batch's latents (held transformer, one reused CUDA graph) are bit-identical.
- ``cli``: N fresh ``ltx2-edge generate`` processes, one after the other.

    python3 bench/service_bench.py serve --clips 8 --budget 32GiB --checkpoint-path F --gemma-root D --out X.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PROMPTS = [
    "A red kite dances over a windy beach at sunset while waves crash and gulls call.",
    "Rain drums on a tin roof as a cat watches from a dusty window.",
    "A steam train crosses a stone bridge in the mountains, whistle echoing.",
    "A street drummer plays under neon lights while traffic hums past.",
    "Waves roll over black volcanic sand as thunder rumbles far away.",
    "A blacksmith hammers glowing iron, sparks flying in a dark workshop.",
    "Children laugh on a carousel at a night fair with organ music.",
    "A waterfall pours into a green pool while birds sing in the ferns.",
]


def get_json(url: str) -> dict:
    """The JSON answer of a GET."""
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def post_json(url: str, body: dict) -> dict:
    """The JSON answer of a POST of ``body`` (an admission behind a Ray replica's planning can take a while)."""
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def _serve(a: argparse.Namespace) -> dict:
    base = f"http://127.0.0.1:{a.port}"
    data = Path(a.work) / f"serve-{a.budget}"
    argv = [sys.executable, "-m", "ltx2_edge", "serve", "--checkpoint-path", str(a.checkpoint_path), "--gemma-root",
            str(a.gemma_root), "--budget", a.budget, "--port", str(a.port), "--data-dir", str(data),
            "--log-level", "warning"]  # fmt: skip
    started = time.perf_counter()
    server = subprocess.Popen(argv, start_new_session=True)
    try:
        while True:
            try:
                if get_json(base + "/health").get("status") in ("ready", "busy"):
                    break
            except OSError:
                pass
            if server.poll() is not None or time.perf_counter() - started > 120:
                raise RuntimeError(f"serve did not become ready (rc {server.poll()})")
            time.sleep(0.2)
        ready_s = time.perf_counter() - started
        t0 = time.perf_counter()
        ids, submitted = [], {}
        for i in range(a.clips):
            body = {"prompt": PROMPTS[i % len(PROMPTS)], "size": "512x288", "num_frames": 97, "seed": 10 + i,
                    "num_inference_steps": a.steps}  # fmt: skip
            job = post_json(base + "/v1/videos", body)
            ids.append(job["id"])
            submitted[job["id"]] = time.perf_counter() - t0
        done: dict[str, dict] = {}
        while len(done) < len(ids):
            for job_id in ids:
                if job_id in done:
                    continue
                v = get_json(f"{base}/v1/videos/{job_id}")
                if v["status"] in ("completed", "failed", "cancelled"):
                    v["seen_at_s"] = time.perf_counter() - t0
                    done[job_id] = v
            time.sleep(0.1)
        ends = sorted(v["seen_at_s"] for v in done.values())
        rows = []
        for job_id in ids:
            v = done[job_id]
            report = v.get("report") or {}
            stages = {s["stage"]: round(s["seconds"], 3) for s in report.get("stages", [])}
            peaks = {s["stage"]: round(s["peak_bytes"] / 2**30, 3) for s in report.get("stages", [])}
            within = all(s["details"].get("within_budget", True) for s in report.get("stages", []))
            rows.append({"id": job_id, "status": v["status"], "submitted_s": round(submitted[job_id], 3),
                         "completed_s": round(v["seen_at_s"], 3), "stages": stages, "peaks_gib": peaks,
                         "within_budget": within, "batch": report.get("batch"), "error": v.get("error")})  # fmt: skip
        total = ends[-1]
        steady = (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else None
        return {"mode": "serve", "budget": a.budget, "clips": a.clips, "server_ready_s": round(ready_s, 3),
                "total_s": round(total, 3), "clips_per_minute": round(60 * len(ends) / total, 3),
                "first_clip_s": round(ends[0], 3), "steady_per_clip_s": steady and round(steady, 3),
                "largest_batch": _largest_batch(rows), "jobs": rows}  # fmt: skip
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def _generator(a: argparse.Namespace) -> dict:
    from ltx2_edge.pipeline import Generator, RunSettings
    from ltx2_edge.plan.budget import parse_size
    from ltx2_edge.request import GenerationRequest

    t0 = time.perf_counter()
    gen = Generator(a.checkpoint_path, a.gemma_root, RunSettings(budget=parse_size(a.budget)))
    ends, rows = [], []
    for i in range(a.clips):
        request = GenerationRequest(prompt=PROMPTS[i % len(PROMPTS)], seed=10 + i, num_inference_steps=a.steps)
        result = gen.generate(request, Path(a.work) / f"gen-{i}.mp4", overwrite=True)
        ends.append(time.perf_counter() - t0)
        rows.append({"total_s": round(result.report.total_seconds, 3),
                     "stages": {s.stage: round(s.seconds, 3) for s in result.report.stages}})  # fmt: skip
    return {"mode": "generator", "budget": a.budget, "clips": a.clips, "total_s": round(ends[-1], 3),
            "clips_per_minute": round(60 * a.clips / ends[-1], 3), "first_clip_s": round(ends[0], 3),
            "per_clip_s": [r["total_s"] for r in rows], "jobs": rows}  # fmt: skip


def _phased(a: argparse.Namespace) -> dict:
    import torch

    from ltx2_edge.phased import PhasedJob, run_phased
    from ltx2_edge.pipeline import Generator, RunSettings
    from ltx2_edge.plan.budget import parse_size
    from ltx2_edge.request import GenerationRequest

    t0 = time.perf_counter()
    gen = Generator(a.checkpoint_path, a.gemma_root, RunSettings(budget=parse_size(a.budget)))
    ready = time.perf_counter() - t0
    requests = [GenerationRequest(prompt=PROMPTS[i % len(PROMPTS)], seed=10 + i, num_inference_steps=a.steps)
                for i in range(a.clips)]  # fmt: skip
    jobs = [PhasedJob(f"clip-{i}", r, Path(a.work) / f"phased-{i}.mp4") for i, r in enumerate(requests)]
    done: dict[str, tuple[float, object]] = {}
    errors: dict[str, str] = {}

    timeline: list[tuple[str, float]] = []  # (job, seconds) each time the batch turns to a job: where gaps lie

    class Hooks:
        def bind(self, job):  # noqa: ANN202
            if not timeline or timeline[-1][0] != job.job_id:
                timeline.append((job.job_id, round(time.perf_counter() - t0, 3)))

        def on_step(self, job):  # noqa: ANN202
            return None

        def cached(self, job):  # noqa: ANN202
            return None

        def encoded(self, job, contexts):  # noqa: ANN202
            pass

        def completed(self, job, result):  # noqa: ANN202
            done[job.job_id] = (time.perf_counter() - t0, result)

        def failed(self, job, error):  # noqa: ANN202
            errors[job.job_id] = f"{type(error).__name__}: {error}"

    batch = run_phased(gen, jobs, Hooks())
    ends = sorted(t for t, _ in done.values())
    rows = []
    for job in jobs:
        if job.job_id not in done:
            rows.append({"id": job.job_id, "error": errors.get(job.job_id)})
            continue
        t, result = done[job.job_id]
        den = next(s for s in result.report.stages if s.stage == "denoise").details
        rows.append({"id": job.job_id, "completed_s": round(t, 3),
                     "stages": {s.stage: round(s.seconds, 3) for s in result.report.stages},
                     "steady_step_s": den.get("seconds_per_step_steady"),
                     "graph_reused": (den.get("accel_stats") or {}).get("graph_reused"),
                     "peaks_gib": {s.stage: round(s.peak_bytes / 2**30, 3) for s in result.report.stages},
                     "within_budget": all(s.details.get("within_budget", True)
                                          for s in result.report.stages)})  # fmt: skip
    check = []
    for i in range(min(a.check, len(jobs))):
        if jobs[i].job_id not in done:
            continue
        batch_latents = done[jobs[i].job_id][1].latents
        alone = gen.generate(requests[i], Path(a.work) / f"alone-{i}.mp4", overwrite=True).latents
        check.append({"clip": i, "video_equal": bool(torch.equal(batch_latents.video, alone.video)),
                      "audio_equal": bool(torch.equal(batch_latents.audio, alone.audio)),
                      "video_max_abs": float((batch_latents.video.float()
                                              - alone.video.float()).abs().max())})  # fmt: skip
    steady = (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else None
    return {"mode": "phased", "budget": a.budget, "clips": a.clips, "generator_ready_s": round(ready, 3),
            "total_s": round(ends[-1], 3) if ends else None,
            "clips_per_minute": round(60 * len(ends) / ends[-1], 3) if ends else None,
            "first_clip_s": round(ends[0], 3) if ends else None, "steady_per_clip_s": steady and round(steady, 3),
            "batch": None if batch is None else {"reasons": list(batch.reasons),
                                                 "hold_step_graph": batch.hold_step_graph},
            "reuse_check": check, "jobs": rows, "timeline": timeline}  # fmt: skip


def _cli(a: argparse.Namespace) -> dict:
    t0, ends = time.perf_counter(), []
    for i in range(a.clips):
        argv = [sys.executable, "-m", "ltx2_edge", "generate", "--checkpoint-path", str(a.checkpoint_path),
                "--gemma-root", str(a.gemma_root), "--budget", a.budget, "--prompt", PROMPTS[i % len(PROMPTS)],
                "--seed", str(10 + i), "--num-inference-steps", str(a.steps), "--quiet", "--overwrite",
                "--output-path", str(Path(a.work) / f"cli-{i}.mp4")]  # fmt: skip
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        ends.append(time.perf_counter() - t0)
    per = [round(b - a_, 3) for a_, b in zip([0.0, *ends], ends, strict=False)]
    return {"mode": "cli", "budget": a.budget, "clips": a.clips, "total_s": round(ends[-1], 3),
            "clips_per_minute": round(60 * a.clips / ends[-1], 3), "first_clip_s": round(ends[0], 3),
            "per_clip_s": per}  # fmt: skip


def _largest_batch(rows: list[dict]) -> dict | None:
    """The largest batch's clips: how many, its first and last completion, and the seconds between completions after
    its first clip (which carries the batch's loads and capture). That is the steady per-clip time when each clip
    decodes right after its denoise (``interleave_decode``); otherwise the MP4s land together at the batch's end and
    only ``per_clip_s`` (from the previous batch's end to this one's) says what a clip costs."""
    sized = [r for r in rows if r["status"] == "completed" and r.get("batch")]
    if not sized:
        return None
    size = max(r["batch"]["jobs"] for r in sized)
    mine = sorted(r["completed_s"] for r in sized if r["batch"]["jobs"] == size)
    before = [r["completed_s"] for r in sized if r["completed_s"] < mine[0] and r["batch"]["jobs"] != size]
    start = max(before, default=0.0)
    return {"jobs": size, "first_completed_s": mine[0], "last_completed_s": mine[-1],
            "interleave_decode": bool(sized[0]["batch"].get("interleave_decode")),
            "after_first_per_clip_s": round((mine[-1] - mine[0]) / (len(mine) - 1), 3) if len(mine) > 1 else None,
            "per_clip_s": round((mine[-1] - start) / len(mine), 3)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("serve", "generator", "phased", "cli"))
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--budget", default="32GiB")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--check", type=int, default=0, help="phased: clips regenerated alone to compare latents")
    ap.add_argument("--work", default="/tmp/service-bench")
    ap.add_argument("--checkpoint-path", type=Path, required=True)
    ap.add_argument("--gemma-root", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    Path(a.work).mkdir(parents=True, exist_ok=True)
    row = {"serve": _serve, "generator": _generator, "phased": _phased, "cli": _cli}[a.mode](a)
    a.out.write_text(json.dumps(row, indent=1))
    print(json.dumps({k: v for k, v in row.items() if k not in ("jobs", "timeline")}))


if __name__ == "__main__":
    main()
