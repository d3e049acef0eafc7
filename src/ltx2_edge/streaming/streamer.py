"""Streams a stage's repeated blocks through a few preallocated device slots while earlier blocks compute.

K blocks stay resident with their own parameters; each streamed block is copied from a ``WeightSource`` into
one of ``prefetch + 1`` slots (one uint8 device buffer each, allocated once and carved into views by the block
layout). The order is the block order, fixed and known, repeated every forward. The streamed block at position
``p`` of that order always uses slot ``p % slots``, so its module's tensors are bound to that slot's views once,
at setup, and a forward's kernels read the same addresses every time: a forward can be captured as a CUDA graph
(``capture_begin``/``capture_end``/``graph_ran``). A slot's next block is loaded as soon as its last one has run:
position ``p + slots`` of this forward, or, for the forward's last ``slots`` positions, the next forward's first
ones, so they are copied while this forward's last blocks compute.

Synchronisation rules (CUDA; on CPU everything runs in program order and the events are absent):

- copy -> compute: before a streamed block runs, the compute stream waits on the event recorded after the copy
  into its slot.
- compute -> reuse: after a streamed block runs, an event is recorded on the compute stream; the copy stream
  waits on it before overwriting that slot with a later block.

Hooks, not wrappers: a forward pre-hook waits for the block's copy, a forward hook records "compute done" and
issues the next copy. The ``ModuleList``, module classes and state-dict names stay exactly ltx-core's (the
quantization policy matches by name; ``block.idx`` and isinstance checks keep working) and ``close()`` removes
every trace. This module must never trace execution to learn an order, pin tensor by tensor, allocate per step,
or change ltx-core's forward.

A captured forward (pinned sources only: a file read is host work no graph can hold) records the same copies,
waits and events as graph nodes: the copy stream joins the capture at its first wait on a "compute done" event
and rejoins the compute stream at ``capture_end``, after the copies of the next forward's first blocks, so a
replay leaves the slots as an eager forward would. Replays run no hook: ``graph_ran`` re-records the events on
the compute stream after each, so eager forwards and copies can follow, and counts the replay's copies.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import torch
from torch import nn

from ltx2_edge.errors import RequestError
from ltx2_edge.streaming.layout import BlockLayout, module_tensors
from ltx2_edge.streaming.sources import WeightSource

log = logging.getLogger(__name__)

# Where a block tensor lives: the module's ``_parameters`` or ``_buffers`` dict, its key, and which of the two.
_Target = tuple[dict[str, torch.Tensor], str, bool]


@dataclass(frozen=True)
class StreamStats:
    """What streaming cost so far. ``bytes_streamed``/``copies`` count loads consumed by blocks that ran."""

    bytes_streamed: int
    copies: int
    host_wait_s: float  # main thread blocked on a load (a file read, or a synchronous copy on CPU)
    device_wait_s: float  # compute stream stalled on a copy event (CUDA events; 0.0 on CPU)
    slots: int
    slot_bytes: int  # each slot; slots * slot_bytes is the device memory streaming holds
    source_pinned_bytes: int

    @property
    def wait_s(self) -> float:
        return self.host_wait_s + self.device_wait_s


class BlockStreamer:
    """Runs ``blocks`` with ``resident`` ones on the device and the rest streamed from ``source``.

    Build the model with resident blocks (and everything outside ``blocks``) already on ``device``; streamed
    blocks may be on ``meta``: their tensors are replaced by slot views here. The streamer owns ``source`` and
    closes it. Every forward must run the blocks in order; after a forward that raised, call ``reset()``.
    """

    def __init__(
        self,
        blocks: nn.ModuleList,
        source: WeightSource,
        resident: Iterable[int],
        *,
        device: torch.device | str,
        prefetch: int = 2,
    ) -> None:
        """Check the plan, allocate ``prefetch + 1`` slots, hook the streamed blocks and start the first copies.

        The streamer owns ``source`` from here on: ``close()`` closes it, and so does a constructor that raises.
        """
        self._source, self._closed, self._broken = source, False, None
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._pending: list[Future[None] | None] = []
        self._reader: ThreadPoolExecutor | None = None
        self._slots: list[torch.Tensor] = []
        self._order: tuple[int, ...] = ()
        self._targets: dict[int, list[_Target]] = {}
        self._cuda = False
        try:
            self._setup(blocks, set(resident), torch.device(device), prefetch)
        except BaseException:
            self.close()  # a plan that does not fit, or a source failing its first reads, leaves nothing behind
            raise

    def _setup(self, blocks: nn.ModuleList, resident: set[int], device: torch.device, prefetch: int) -> None:
        source = self._source
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 2:
            raise RequestError("prefetch", prefetch, "an integer >= 2 (blocks being copied while one computes)")
        bad = sorted(i for i in resident if not 0 <= i < len(blocks))
        if bad:
            raise RequestError("resident", bad, f"block indices in 0..{len(blocks) - 1}")
        order = tuple(i for i in range(len(blocks)) if i not in resident)
        if not order:
            raise RequestError("resident", sorted(resident), "fewer than all blocks: with none streamed, don't stream")
        missing = [i for i in order if i not in source.blocks]
        if missing:
            raise ValueError(f"source lacks streamed blocks {missing}: build it for blocks {list(order)}")
        for i in sorted(resident):
            for name, t in module_tensors(blocks[i]).items():
                if t.device != device:
                    raise ValueError(f"resident block {i}'s {name!r} is on {t.device}: move it to {device} first")
        layouts = {i: source.layout(i) for i in order}
        for i in order:
            layouts[i].check_tensors(module_tensors(blocks[i]), f"streamed block {i}'s module tensors")
        distinct = list(dict.fromkeys(layouts.values()))
        slot_bytes = max(lay.nbytes for lay in distinct)
        if len(distinct) > 1:
            log.warning(
                "streamed blocks have %d different layouts (%d..%d bytes): every slot is sized for the largest",
                len(distinct),
                min(lay.nbytes for lay in distinct),
                slot_bytes,
            )

        self._device, self._cuda, self._order, self._layouts = device, device.type == "cuda", order, layouts
        self._slot_bytes = slot_bytes
        self._forward_bytes = sum(layouts[i].nbytes for i in order)  # what one forward's copies move
        # More slots than streamed blocks would only hold copies of the same blocks.
        n_slots = min(prefetch + 1, len(order))
        # Allocated once: no allocator traffic per step, and data_ptrs that never change.
        self._slots = [torch.empty(slot_bytes, dtype=torch.uint8, device=device) for _ in range(n_slots)]
        self._targets = {i: _resolve_targets(blocks[i], layouts[i]) for i in order}
        self._copy_stream = torch.cuda.Stream(device) if self._cuda else None
        self._ready = [torch.cuda.Event() for _ in range(n_slots)] if self._cuda else []
        self._free = [torch.cuda.Event() for _ in range(n_slots)] if self._cuda else []
        self._timing: deque[tuple[torch.cuda.Event, torch.cuda.Event]] = deque()
        self._spare_timing: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        if source.blocks_host:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="ltx2-block-reader")
        self._pending = [None] * n_slots
        self._bytes = self._copies = 0
        self._host_wait = self._device_wait = 0.0
        self._capturing = False
        self._captured_ready: set[int] = set()  # slots whose copy was recorded in the capture under way
        for pos, i in enumerate(order):
            # Bound once (position p always runs from slot p % slots); this also drops the module's own tensors
            # (full copies or meta): it only ever holds slot views.
            self._bind(i, pos % n_slots)
        for i in order:
            self._hooks.append(blocks[i].register_forward_pre_hook(functools.partial(self._before, i)))
            self._hooks.append(blocks[i].register_forward_hook(functools.partial(self._after, i)))
        self._next = 0
        for n in range(n_slots):
            self._issue(n)

    # ---- public API ------------------------------------------------------------------------------------

    @property
    def slots(self) -> tuple[torch.Tensor, ...]:
        """The slot buffers (for inspection: their data_ptrs never change while the streamer lives)."""
        return tuple(self._slots)

    @property
    def streamed(self) -> tuple[int, ...]:
        """Streamed block indices, in the order they run."""
        return self._order

    def stats(self) -> StreamStats:
        """Totals so far. On CUDA this waits for the timing events of blocks already launched."""
        self._harvest_timing(block=True)
        return StreamStats(
            bytes_streamed=self._bytes,
            copies=self._copies,
            host_wait_s=self._host_wait,
            device_wait_s=self._device_wait,
            slots=len(self._slots),
            slot_bytes=self._slot_bytes,
            source_pinned_bytes=self._source.pinned_bytes,
        )

    @property
    def capturable(self) -> bool:
        """Whether a forward through this streamer can be captured as a CUDA graph (CUDA, a pinned source)."""
        return self._cuda and self._reader is None and not self._closed

    def capture_begin(self) -> None:
        """Call before capturing a forward (outside the capture): waits for every copy issued so far, so the
        forward's first blocks, already in their slots, need no wait inside the graph."""
        if not self.capturable:
            raise RuntimeError("this streamer's forwards cannot be captured: they need CUDA and a pinned source "
                               "(file reads are host work)")  # fmt: skip
        if self._next % len(self._order):
            raise RuntimeError("a capture must start at a forward's first block: call reset() first")
        torch.cuda.synchronize(self._device)
        self._harvest_timing(block=True)
        self._capturing, self._captured_ready, self._capture_start = True, set(), self._next

    def capture_end(self, failed: bool = False) -> None:
        """Call inside the capture, after the forward: the compute stream waits for the copy stream's last copies
        (the next forward's first blocks), which joins the copy stream's branch back into the graph. ``failed``:
        the forward raised (the join still lets the capture end; the caller then calls ``reset()``)."""
        if not self._capturing:
            raise RuntimeError("capture_begin() first")
        stream = torch.cuda.current_stream(self._device)
        for slot in sorted(self._captured_ready):
            stream.wait_event(self._ready[slot])
        self._capturing = False
        ran = self._next - self._capture_start
        if not failed and ran != len(self._order):
            self._broken = f"a captured forward ran {ran} of its {len(self._order)} streamed blocks"
            raise RuntimeError(f"{self._broken}: a graph must hold exactly one forward")

    def graph_ran(self, replayed: bool) -> None:
        """Call after the capture and after each replay (on the stream that launched it): the events now mean
        "after the graph", so eager forwards and copies may follow; a replay's copies join the totals."""
        if self._capturing:
            raise RuntimeError("capture_end() was not called inside the capture")
        stream = torch.cuda.current_stream(self._device)
        for event in (*self._ready, *self._free):
            # The graph's own events never leave it; every copy and block it ran is done once the graph is.
            event.record(stream)
        if replayed:
            self._bytes += self._forward_bytes
            self._copies += len(self._order)

    def reset(self) -> None:
        """Restart the sequence at the first streamed block (after a forward that raised part-way)."""
        self._capturing = False
        self._drain()
        if self._cuda:
            stream = torch.cuda.current_stream(self._device)
            for event in self._free:
                # compute -> reuse for whatever the interrupted forward launched: the reloads below must not
                # overwrite a slot its kernels may still read.
                event.record(stream)
        self._next, self._broken = 0, None
        for n in range(len(self._slots)):
            self._issue(n)

    def close(self) -> None:
        """Stop streaming: remove hooks, release slots and the source; streamed blocks are left on ``meta``."""
        if self._closed:
            return
        self._closed = True
        for handle in self._hooks:
            handle.remove()
        self._drain()
        if self._reader is not None:
            self._reader.shutdown(wait=True)
        if self._cuda:
            # Once per stage, so a full sync is free: no copy or kernel may still touch a slot when the caching
            # allocator hands its memory to the next tensor, which would otherwise be silently corrupted.
            torch.cuda.synchronize(self._device)
        for i, targets in self._targets.items():
            for (owner, key, is_param), e in zip(targets, self._layouts[i].entries, strict=True):
                # Meta tensors keep the module's structure but no reference to a slot, so the slots can be freed.
                meta = torch.empty(e.shape, dtype=e.dtype, device="meta")
                owner[key] = nn.Parameter(meta, requires_grad=False) if is_param else meta
        self._targets = {}
        self._slots = []
        self._pending = []
        self._source.close()

    def __enter__(self) -> BlockStreamer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- hooks ---------------------------------------------------------------------------------------------

    def _before(self, i: int, module: nn.Module, args: object) -> None:
        if self._broken is not None:
            raise RuntimeError(f"block streaming stopped after an error ({self._broken}); call reset() to restart")
        n = self._next
        pos = n % len(self._order)
        expected = self._order[pos]
        if i != expected:
            raise RuntimeError(
                f"block {i} is about to run but the streamer expects block {expected} (streamed blocks run in "
                f"order {list(self._order)} every forward); after an interrupted forward call reset()"
            )
        slot = pos % len(self._slots)
        pending = self._pending[slot]
        if pending is not None:
            t0 = time.perf_counter()
            try:
                pending.result()  # re-raises here, in the caller, whatever the reader thread raised
            except BaseException as exc:
                self._broken = repr(exc)  # this slot holds no valid block: nothing may run from it
                raise
            finally:
                self._pending[slot] = None
                self._host_wait += time.perf_counter() - t0
        if self._capturing:
            if slot in self._captured_ready:
                # copy -> compute, as below; a copy issued before the capture is done (capture_begin synchronised).
                torch.cuda.current_stream(self._device).wait_event(self._ready[slot])
                self._captured_ready.discard(slot)
        elif self._cuda:
            stream = torch.cuda.current_stream(self._device)
            start, end = self._spare_timing.pop() if self._spare_timing else _timing_pair()
            start.record(stream)
            # copy -> compute: without this wait the block's kernels could read the slot while the copy stream
            # is still writing it, silently computing with a mix of two blocks' weights.
            stream.wait_event(self._ready[slot])
            end.record(stream)
            self._timing.append((start, end))
            self._harvest_timing(block=False)
        if not self._capturing:  # a captured forward's copies count at each replay (graph_ran)
            self._bytes += self._layouts[i].nbytes
            self._copies += 1

    def _after(self, i: int, module: nn.Module, args: object, output: object) -> None:
        n, m = self._next, len(self._order)
        pos = n % m
        slot = pos % len(self._slots)
        if self._cuda:
            # compute -> reuse: recorded after this block's kernels; the copy stream waits on it before the next
            # copy into this slot, which would otherwise overwrite weights these kernels are still reading.
            self._free[slot].record(torch.cuda.current_stream(self._device))
        self._next = n + 1
        # The slot's next block: p + slots in this forward, else the next forward's first one in this slot.
        self._issue(n + len(self._slots) if pos + len(self._slots) < m else n - pos + m + slot)

    # ---- internals -----------------------------------------------------------------------------------------

    def _issue(self, n: int) -> None:
        pos = n % len(self._order)
        slot, block = pos % len(self._slots), self._order[pos]
        if self._reader is not None:
            self._pending[slot] = self._reader.submit(self._load, slot, block)
            return
        t0 = time.perf_counter()
        try:
            self._load(slot, block)
        except BaseException as exc:
            self._broken = repr(exc)  # this slot holds no valid block: nothing may run from it
            raise
        if not self._cuda:
            # On CPU the copy is synchronous: all of it is time the computation waits.
            self._host_wait += time.perf_counter() - t0

    def _load(self, slot: int, block: int) -> None:
        dst = self._slots[slot][: self._layouts[block].nbytes]
        if not self._cuda:
            self._source.read_block(block, dst)
            return
        with torch.cuda.stream(self._copy_stream):
            # compute -> reuse (see _after). Issued only after that event was recorded: loads into a slot are
            # submitted from the hook that records it, so this never waits on a stale or unrecorded event.
            self._copy_stream.wait_event(self._free[slot])
            self._source.read_block(block, dst)
            # copy -> compute (see _before): marks the end of exactly this block's copy into this slot.
            self._ready[slot].record(self._copy_stream)
        if self._capturing:
            self._captured_ready.add(slot)

    def _bind(self, i: int, slot: int) -> None:
        views = self._layouts[i].views(self._slots[slot])
        for (owner, name, is_param), e in zip(self._targets[i], self._layouts[i].entries, strict=True):
            owner[name] = nn.Parameter(views[e.name], requires_grad=False) if is_param else views[e.name]

    def _drain(self) -> None:
        pending = [f for f in self._pending if f is not None]
        # Wait so no reader thread still writes into a slot; their errors were raised at a wait already, or
        # belong to prefetches whose blocks will never run.
        wait(pending)
        self._pending = [None] * len(self._pending)

    def _harvest_timing(self, block: bool) -> None:
        while self._timing and (block or self._timing[0][1].query()):
            start, end = self._timing.popleft()
            end.synchronize()
            self._device_wait += start.elapsed_time(end) / 1000.0
            self._spare_timing.append((start, end))


def _timing_pair() -> tuple[torch.cuda.Event, torch.cuda.Event]:
    return torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)


def _resolve_targets(block: nn.Module, layout: BlockLayout) -> list[_Target]:
    """Per layout entry: the ``_parameters``/``_buffers`` dict holding it, its key, and whether a parameter."""
    targets = []
    for e in layout.entries:
        mod_name, _, key = e.name.rpartition(".")
        mod = block.get_submodule(mod_name)
        is_param = key in mod._parameters
        targets.append((mod._parameters if is_param else mod._buffers, key, is_param))
    return targets
