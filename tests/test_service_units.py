"""The service's parts on their own (no model, no HTTP): the job store and its recovery, the data directory,
the prompt-embedding cache, the event hub's order, the token check and the body translation."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ltx2_edge.errors import RequestError
from ltx2_edge.service import api_models
from ltx2_edge.service.auth import BearerAuth, is_loopback, resolve_token
from ltx2_edge.service.events import EventHub
from ltx2_edge.service.files import DataDir, check_job_id, new_job_id
from ltx2_edge.service.prompt_cache import PromptCache, PromptKey, encoder_identity, value_bytes
from ltx2_edge.service.store import IdempotencyConflict, NewJob, QueueFull, SqliteJobStore

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


def _job(key: str | None = None, body_hash: str | None = None) -> NewJob:
    return NewJob(new_job_id(), {"prompt": "p"}, {}, key, body_hash)


def test_store_queue_limit_order_and_idempotency(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    first, created = store.add(_job("k1", "h1"), queue_limit=2)
    assert created and first.status == "queued"
    again, created = store.add(_job("k1", "h1"), queue_limit=2)
    assert not created and again.id == first.id  # same key, same body: the same job
    with pytest.raises(IdempotencyConflict):
        store.add(_job("k1", "other"), queue_limit=2)
    second, _ = store.add(_job(), queue_limit=2)
    with pytest.raises(QueueFull) as full:
        store.add(_job(), queue_limit=2)
    assert full.value.waiting == 2
    assert [r.id for r in store.waiting(10)] == [first.id, second.id]  # oldest first
    assert store.start(first.id, time.time()) and not store.start(first.id, time.time())
    third, _ = store.add(_job(), queue_limit=2)  # a running job does not count against the queue limit
    page, more = store.list_jobs(None, 2, "desc")
    assert [r.id for r in page] == [third.id, second.id] and more
    page, more = store.list_jobs(second.id, 2, "desc")
    assert [r.id for r in page] == [first.id] and not more


def test_store_survives_a_crash_and_retries_then_fails_interrupted(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = SqliteJobStore(path)
    job, _ = store.add(_job(), queue_limit=5)
    store.start(job.id, time.time())
    del store  # no close: as after kill -9, the WAL holds the last commits
    for attempt in (1, 2):
        store = SqliteJobStore(path)
        assert store.recover(max_attempts=2, now=time.time()) == {job.id: "queued" if attempt == 1 else "failed"}
        record = store.get(job.id)
        if attempt == 1:
            assert record.status == "queued" and record.attempts == 1
            assert store.start(job.id, time.time())
    assert record.status == "failed" and record.error_code == "interrupted" and record.attempts == 2
    assert "--max-attempts" in record.error_message


def test_store_cancel_finish_expire(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    queued, _ = store.add(_job(), queue_limit=5)
    running, _ = store.add(_job(), queue_limit=5)
    store.start(running.id, time.time())
    assert store.cancel(queued.id, time.time()).status == "cancelled"  # a queued job ends at once
    after = store.cancel(running.id, time.time())
    assert after.status == "in_progress" and after.cancel_requested  # a running one stops at its next step
    assert store.finish(running.id, "completed", 100.0, report={"x": 1}, expires_at=150.0)
    assert not store.finish(running.id, "failed", 101.0, error=("e", "m"))  # an ended job stays ended
    assert store.get(running.id).progress == 100
    assert store.expire(149.0) == [] and store.expire(151.0) == [running.id] and store.expire(152.0) == []
    assert store.get(running.id).expired


def test_data_dir_names_uploads_and_cleanup(tmp_path):
    files = DataDir(tmp_path / "data")
    job = new_job_id()
    assert check_job_id(job) and not check_job_id("../../etc/passwd") and not check_job_id(job + "/x")
    name = files.save_upload(job, 0, PNG, "images[0]")
    assert name == f"{job}-0.png" and files.upload_path(name).read_bytes() == PNG
    with pytest.raises(RequestError, match="PNG, JPEG, WebP or BMP"):
        files.save_upload(job, 1, b"#!/bin/sh\n", "images[1]")
    with pytest.raises(ValueError):
        files.upload_path("../jobs.sqlite3")
    stray = files.outputs / f".{job}.mp4.partial-123-abcd.mp4"
    stray.write_bytes(b"half")
    files.output_path(job).write_bytes(b"mp4")
    assert files.remove_temporaries() == [stray.name] and not stray.exists()
    other = new_job_id()
    files.output_path(other).write_bytes(b"mp4")
    removed = files.remove_orphans(keep_uploads=set(), keep_outputs={job})
    assert sorted(removed) == sorted([name, f"{other}.mp4"]) and files.output_path(job).exists()


class _Tensor:  # what value_bytes counts: element_size() * nelement()
    def __init__(self, n: int) -> None:
        self.n = n

    def element_size(self) -> int:
        return 2

    def nelement(self) -> int:
        return self.n


def test_prompt_cache_is_bounded_by_entries_and_bytes(tmp_path):
    shard = tmp_path / "model.safetensors"
    shard.write_bytes(b"x")
    enc = encoder_identity([shard])
    shard.write_bytes(b"xy")  # the file changed: another encoder, no stale hit
    assert encoder_identity([shard]) != enc
    cache = PromptCache(max_entries=2, max_bytes=100)
    keys = [PromptKey(f"p{i}", "neg", enc) for i in range(3)]
    assert value_bytes({"v": (_Tensor(10), [_Tensor(5)])}) == 30
    assert cache.put(keys[0], (_Tensor(10),)) and cache.put(keys[1], (_Tensor(10),))
    assert cache.get(keys[0]) is not None  # keys[0] is now the most recent
    cache.put(keys[2], (_Tensor(10),))  # over 2 entries: the least recently used (keys[1]) goes
    assert cache.get(keys[1]) is None and cache.get(keys[2]) is not None
    assert not cache.put(PromptKey("big", "", enc), _Tensor(51))  # 102 bytes > max_bytes: not kept
    cache.put(keys[1], _Tensor(45))  # 90 bytes: evicts until it fits
    stats = cache.stats()
    assert stats.bytes <= 100 and stats.entries == 1 and stats.hits == 2 and stats.misses == 1


def test_event_hub_replays_then_streams_in_order():
    hub = EventHub()
    job = new_job_id()
    for i in range(3):
        hub.publish(job, "step", {"i": i})

    async def listen(after: int) -> list[tuple[int, str]]:
        out = []
        async for event in hub.stream(job, after):
            if event is not None:
                out.append((event.id, event.kind))
        return out

    async def main() -> tuple[list, list]:
        late = asyncio.create_task(listen(0))
        resumed = asyncio.create_task(listen(2))  # Last-Event-ID: 2
        await asyncio.sleep(0.05)
        worker = threading.Thread(
            target=lambda: [hub.publish(job, "step", {"i": 3}), hub.publish(job, "completed", {})]
        )
        worker.start()
        worker.join()
        return await asyncio.wait_for(late, 5), await asyncio.wait_for(resumed, 5)

    late, resumed = asyncio.run(main())
    assert late == [(1, "step"), (2, "step"), (3, "step"), (4, "step"), (5, "completed")]
    assert resumed == [(3, "step"), (4, "step"), (5, "completed")]


def test_token_rules():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert resolve_token("127.0.0.1", None) == (None, False)
    token, generated = resolve_token("0.0.0.0", None)
    assert generated and len(token) >= 40
    assert resolve_token("0.0.0.0", "given") == ("given", False)
    auth = BearerAuth("s3cret")
    assert auth.allows("Bearer s3cret") and auth.allows("bearer s3cret")
    assert not auth.allows("Bearer s3cre") and not auth.allows("s3cret") and not auth.allows(None)
    assert not auth.allows("Basic s3cret")


def test_body_translation():
    body = api_models.parse_body({"prompt": "p", "size": "64x96", "seconds": "2", "frame_rate": "24"})
    params = api_models.to_params(body, [])
    assert (params["width"], params["height"], params["num_frames"]) == (64, 96, 49)
    assert api_models.frames_for_seconds(4, 24) == 97  # the OpenAI default length: W1's 97 frames
    with pytest.raises(RequestError, match=r"size='64 by 96' is not allowed: WIDTHxHEIGHT"):
        api_models.to_params(api_models.parse_body({"prompt": "p", "size": "64 by 96"}), [])
    with pytest.raises(RequestError, match="seconds.*unset when num_frames is given"):
        api_models.to_params(api_models.parse_body({"prompt": "p", "seconds": 4, "num_frames": 9}), [])
    with pytest.raises(RequestError, match=r"seed='ten' is not allowed: an integer"):
        api_models.parse_body({"prompt": "p", "seed": "ten"})
    with pytest.raises(RequestError, match=r"loras\[0\]\.name='\.\./x' is not allowed"):
        api_models.to_params(api_models.parse_body({"prompt": "p", "loras": [{"name": "../x"}]}), [])
    err = RequestError("image[0].path", "/srv/data/uploads/video_1-0.png", "an existing image file (see --image)")
    param, message = api_models.request_error(err, {"/srv/data/uploads/video_1-0.png": "images[0]"})
    assert (
        param == "images[0]" and message == "images[0]='images[0]' is not allowed: an existing image file (see images)"
    )


def test_a_generated_token_always_parses_as_the_value_of_token(monkeypatch):
    from ltx2_edge.cli.parser import build_parser
    from ltx2_edge.service import auth

    draws = iter(["-starts-with-a-dash", "fine_token"])
    monkeypatch.setattr(auth.secrets, "token_urlsafe", lambda n: next(draws))
    assert auth.generate_token() == "fine_token"  # the dashed draw was refused
    monkeypatch.undo()
    for _ in range(200):
        token = auth.generate_token()
        args = build_parser().parse_args(["serve", "--checkpoint-path", "c", "--gemma-root", "g", "--token", token])
        assert args.token == token
