"""Block streaming on CPU: streamed == all-resident bit for bit, no slot churn, exact byte counts, errors reach the
caller, close() lets go of everything. The tiny LTX-2 transformer has 6 blocks: 2 resident, 4 streamed."""

from __future__ import annotations

import gc
import json
import logging
import weakref

import pytest
import torch
from ltx_core.guidance.perturbations import BatchedPerturbationConfig
from ltx_core.model.transformer.modality import Modality
from ltx_core.model.transformer.model_configurator import LTXModelConfigurator
from safetensors.torch import save_file

import ltx2_edge  # noqa: F401  (installs the torchaudio placeholder before ltx_core)
from ltx2_edge.checkpoint.configs import ltx2_config
from ltx2_edge.checkpoint.header import read_header
from ltx2_edge.checkpoint.names import LTX2_BLOCK_TENSOR
from ltx2_edge.errors import RequestError
from ltx2_edge.streaming.layout import ALIGN, BlockLayout
from ltx2_edge.streaming.sources import FileSource, PinnedHostSource
from ltx2_edge.streaming.streamer import BlockStreamer

PREFIX = "model.diffusion_model."
RESIDENT = {0, 1}
STREAMED = (2, 3, 4, 5)
PREFETCH = 2


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These shapes are tiny: one intra-op thread is faster, and 4-8x faster on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config() -> dict:
    cfg = ltx2_config("tiny")
    cfg["transformer"]["num_layers"] = 6
    return cfg


def _meta_model() -> torch.nn.Module:
    with torch.device("meta"):
        return LTXModelConfigurator.from_config(_config())


def _inputs(seed: int) -> tuple[Modality, Modality]:
    g = torch.Generator().manual_seed(seed)

    def modality(tokens: int, pos_dims: int) -> Modality:
        start = torch.rand(1, pos_dims, tokens, generator=g) * 10
        sigma = 0.2 + 0.7 * torch.rand(1, generator=g)
        return Modality(
            latent=torch.randn(1, tokens, 128, generator=g).bfloat16(),
            sigma=sigma,
            timesteps=sigma.expand(1, tokens).clone(),
            positions=torch.stack([start, start + 1], dim=-1),
            context=torch.randn(1, 8, 32, generator=g).bfloat16(),
        )

    return modality(24, 3), modality(5, 1)


def _forward(model: torch.nn.Module, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    video, audio = _inputs(seed)
    with torch.no_grad():
        return model(video, audio, BatchedPerturbationConfig.empty(1))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random bf16 tiny checkpoint under official names, one file and the same split into two shards."""
    torch.manual_seed(0)
    model = _meta_model().to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    state = {PREFIX + k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    root = tmp_path_factory.mktemp("ckpt")
    single = root / "ltx2-tiny.safetensors"
    save_file(state, str(single), metadata={"config": json.dumps(_config())})
    # Shards cut across blocks (even a block's own tensors land in both files), like Gemma's model-0000k files.
    names = sorted(state)
    shards = [root / f"model-0000{k + 1}-of-00002.safetensors" for k in range(2)]
    for k, shard in enumerate(shards):
        save_file({n: state[n] for n in names[k::2]}, str(shard))
    reference = _meta_model()
    reference.load_state_dict({k[len(PREFIX) :]: v for k, v in state.items()}, assign=True)
    outputs = [_forward(reference, seed) for seed in range(3)]
    return {"single": single, "shards": shards, "state": state, "outputs": outputs}


def _streaming_model(state: dict[str, torch.Tensor], blocks: tuple[int, ...] = STREAMED) -> torch.nn.Module:
    """Everything but the streamed ``blocks`` loaded; those stay on meta for the streamer to bind."""
    model = _meta_model().to(torch.bfloat16)
    streamed = tuple(f"transformer_blocks.{i}." for i in blocks)
    kept = {k[len(PREFIX) :]: v for k, v in state.items() if not k[len(PREFIX) :].startswith(streamed)}
    model.load_state_dict(kept, assign=True, strict=False)
    return model


def _source(kind: str, checkpoint):
    if kind == "pinned":
        return PinnedHostSource.from_file(checkpoint["single"], STREAMED)
    if kind == "file":
        return FileSource(checkpoint["single"], STREAMED)
    return FileSource(checkpoint["shards"], STREAMED)


@pytest.mark.parametrize("kind", ["pinned", "file", "file-sharded"])
def test_streamed_equals_resident_bit_for_bit(checkpoint, kind):
    model = _streaming_model(checkpoint["state"])
    blocks = model.transformer_blocks
    resident_ptr = blocks[0].attn1.to_q.weight.data_ptr()
    source = _source(kind, checkpoint)
    streamer = BlockStreamer(blocks, source, RESIDENT, device="cpu", prefetch=PREFETCH)
    slot_ptrs = [s.data_ptr() for s in streamer.slots]
    block_bytes = sum(source.layout(i).nbytes for i in STREAMED)
    tensor_bytes = sum(
        v.numel() * 2
        for k, v in checkpoint["state"].items()
        if k.startswith(tuple(f"{PREFIX}transformer_blocks.{i}." for i in STREAMED))
    )
    assert len(streamer.slots) == PREFETCH + 1
    assert streamer.streamed == STREAMED
    # The layout pads every tensor to ALIGN: the copied bytes are the tensors plus less than ALIGN each.
    n_entries = sum(len(source.layout(i).entries) for i in STREAMED)
    assert tensor_bytes <= block_bytes < tensor_bytes + n_entries * ALIGN

    for seed, (ref_video, ref_audio) in enumerate(checkpoint["outputs"]):
        video, audio = _forward(model, seed)
        assert torch.equal(video, ref_video) and torch.equal(audio, ref_audio), f"forward {seed} differs"
        stats = streamer.stats()
        assert stats.copies == len(STREAMED) * (seed + 1)
        assert stats.bytes_streamed == block_bytes * (seed + 1)
        assert [s.data_ptr() for s in streamer.slots] == slot_ptrs  # no allocator churn across forwards
    assert stats.slots == PREFETCH + 1 and stats.device_wait_s == 0.0 and stats.host_wait_s >= 0.0
    # A streamed block's weight is a view into one of the slots, not a tensor of its own.
    w = blocks[5].attn1.to_q.weight
    assert any(s.data_ptr() <= w.data_ptr() < s.data_ptr() + s.numel() for s in streamer.slots)
    assert blocks[0].attn1.to_q.weight.data_ptr() == resident_ptr  # resident blocks keep their own tensors
    streamer.close()


def test_different_layouts_share_slots_sized_by_the_largest(checkpoint, tmp_path, caplog):
    """Block 5 carries one more tensor (a persistent buffer) than the others: slots fit it, and the log says so."""
    extra = torch.arange(300, dtype=torch.float32)
    path = tmp_path / "extra.safetensors"
    save_file({**checkpoint["state"], f"{PREFIX}transformer_blocks.5.extra_scale": extra}, str(path))
    model = _streaming_model(checkpoint["state"])
    blocks = model.transformer_blocks
    blocks[5].register_buffer("extra_scale", torch.empty(300, device="meta"))
    source = FileSource(path, STREAMED)
    with caplog.at_level(logging.WARNING, logger="ltx2_edge.streaming.streamer"):
        streamer = BlockStreamer(blocks, source, RESIDENT, device="cpu", prefetch=PREFETCH)
    assert "2 different layouts" in caplog.text
    sizes = [source.layout(i).nbytes for i in STREAMED]
    assert streamer.stats().slot_bytes == max(sizes) == sizes[-1] > min(sizes)
    seen = []
    blocks[5].register_forward_pre_hook(lambda module, args: seen.append(module.extra_scale.clone()))
    video, audio = _forward(model, 2)
    assert torch.equal(video, checkpoint["outputs"][2][0]) and torch.equal(audio, checkpoint["outputs"][2][1])
    assert len(seen) == 1 and torch.equal(seen[0], extra)  # buffers are streamed like parameters
    assert streamer.stats().bytes_streamed == sum(sizes)
    streamer.close()


class _FailingFile(FileSource):
    def read_block(self, i, dst):
        if i == 5:
            raise OSError(f"read of block {i} failed: disk on fire")
        super().read_block(i, dst)


class _FailingPinned(PinnedHostSource):
    def read_block(self, i, dst):
        if i == 5:
            raise OSError(f"read of block {i} failed: disk on fire")
        super().read_block(i, dst)


@pytest.mark.parametrize("kind", ["pinned", "file"])
def test_source_error_reaches_the_caller(checkpoint, kind):
    model = _streaming_model(checkpoint["state"])
    if kind == "file":
        source = _FailingFile(checkpoint["single"], STREAMED)  # raised on the reader thread, re-raised at the wait
    else:
        source = _FailingPinned.from_file(checkpoint["single"], STREAMED)  # raised while issuing the copy
    streamer = BlockStreamer(model.transformer_blocks, source, RESIDENT, device="cpu", prefetch=PREFETCH)
    with pytest.raises(OSError, match="block 5 failed: disk on fire"):
        _forward(model, 0)
    with pytest.raises(RuntimeError, match="stopped after an error .*disk on fire.*call reset"):
        _forward(model, 0)  # nothing runs from a slot that holds no valid block
    streamer.close()  # after a failure, close still releases everything
    assert streamer.slots == ()


def test_close_releases_slots_source_and_hooks(checkpoint):
    model = _streaming_model(checkpoint["state"])
    blocks = model.transformer_blocks
    source = PinnedHostSource.from_file(checkpoint["single"], STREAMED)
    assert source.host_bytes >= sum(source.layout(i).nbytes for i in STREAMED)
    # Without CUDA plain host memory, reported as host bytes only; with it, page-locked.
    assert source.pinned_bytes == (source.host_bytes if torch.cuda.is_available() else 0)
    streamer = BlockStreamer(blocks, source, RESIDENT, device="cpu", prefetch=PREFETCH)
    _forward(model, 0)
    slot_refs = [weakref.ref(s) for s in streamer.slots]
    host_ref = weakref.ref(source._host.tensor)
    streamer.close()
    gc.collect()
    assert all(r() is None for r in slot_refs), "a slot buffer is still referenced after close()"
    assert host_ref() is None, "the pinned host buffer is still referenced after close()"
    for i in STREAMED:
        assert not blocks[i]._forward_pre_hooks and not blocks[i]._forward_hooks
        assert {p.device.type for p in blocks[i].parameters()} == {"meta"}
    assert blocks[0].attn1.to_q.weight.device.type == "cpu"
    streamer.close()  # idempotent


def test_out_of_order_and_bad_arguments(checkpoint):
    state = checkpoint["state"]
    model = _streaming_model(state)
    blocks = model.transformer_blocks
    source = FileSource(checkpoint["single"], STREAMED)
    with pytest.raises(RequestError, match="prefetch=1"):
        BlockStreamer(blocks, source, RESIDENT, device="cpu", prefetch=1)
    assert source._index.fds == []  # the streamer owns its source: a refused plan closes it
    with pytest.raises(RequestError, match="resident="):
        BlockStreamer(blocks, FileSource(checkpoint["single"], STREAMED), range(6), device="cpu")
    with pytest.raises(ValueError, match=r"source lacks streamed blocks \[5\]"):
        BlockStreamer(blocks, FileSource(checkpoint["single"], (2, 3, 4)), RESIDENT, device="cpu")
    fp32 = _meta_model().to_empty(device="cpu")  # module in float32, file in bfloat16: refused, not converted
    with pytest.raises(ValueError, match="torch.float32.*torch.bfloat16"):
        BlockStreamer(fp32.transformer_blocks, FileSource(checkpoint["single"], STREAMED), RESIDENT, device="cpu")

    streamer = BlockStreamer(blocks, FileSource(checkpoint["single"], STREAMED), RESIDENT, device="cpu")
    with pytest.raises(RuntimeError, match="block 3 is about to run but the streamer expects block 2"):
        _forward_block(blocks, 3)
    streamer.reset()
    video, audio = _forward(model, 1)
    assert torch.equal(video, checkpoint["outputs"][1][0]) and torch.equal(audio, checkpoint["outputs"][1][1])
    streamer.close()


def _forward_block(blocks: torch.nn.ModuleList, i: int) -> None:
    blocks[i](video=None, audio=None)


def test_layout_mixed_dtypes_pack_and_read_back_bit_exact(tmp_path):
    """Quantized blocks: int8/fp8 weights beside fp32 scales and bf16 biases, through memory and through a file."""
    g = torch.Generator().manual_seed(3)
    tensors = {
        "attn.to_q.weight": torch.randint(-128, 128, (33, 17), generator=g, dtype=torch.int8),
        "attn.to_q.weight_scale": torch.rand(33, generator=g) + 0.01,
        "attn.to_q.bias": torch.randn(33, generator=g).bfloat16(),
        "ff.proj.weight": torch.randn(7, 40, generator=g).clamp(-400, 400).to(torch.float8_e4m3fn),
        "ff.proj.weight_scale": torch.rand(7, 1, generator=g),
        "norm.enabled": torch.tensor(True),
    }
    layout = BlockLayout.pack((n, t.dtype, t.shape) for n, t in tensors.items())
    assert all(e.offset % ALIGN == 0 for e in layout.entries) and layout.nbytes % ALIGN == 0
    assert layout.tensor_bytes == sum(t.numel() * t.element_size() for t in tensors.values())
    buffer = torch.zeros(layout.nbytes, dtype=torch.uint8)
    layout.pack_tensors(tensors, buffer)
    for name, view in layout.views(buffer).items():
        assert view.dtype == tensors[name].dtype and torch.equal(_bits(view), _bits(tensors[name])), name

    path = tmp_path / "quant.safetensors"
    # Block 0 holds zeros, block 1 the tensors: reading block 1 must not pick up a byte of block 0.
    stored = {LTX2_BLOCK_TENSOR.format(i=1, name=n): t for n, t in tensors.items()}
    stored |= {LTX2_BLOCK_TENSOR.format(i=0, name=n): torch.zeros_like(t) for n, t in tensors.items()}
    save_file(stored, str(path))
    source = FileSource(path, (0, 1))
    assert source.layout(0) == source.layout(1)  # every block of a stage shares one layout
    header = read_header(path)
    prefix = LTX2_BLOCK_TENSOR.format(i=1, name="")
    infos = header.with_prefix(prefix)
    assert BlockLayout.from_tensor_infos(infos.values(), {n: n[len(prefix) :] for n in infos}) == source.layout(1)
    dst = torch.zeros(source.layout(1).nbytes, dtype=torch.uint8)
    source.read_block(1, dst)
    for name, view in source.layout(1).views(dst).items():
        assert torch.equal(_bits(view), _bits(tensors[name])), name
    with pytest.raises(ValueError, match=r"dst for block 1 must be .* >= \d+ bytes"):
        source.read_block(1, torch.zeros(16, dtype=torch.uint8))
    source.close()


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


def _slot_of(streamer: BlockStreamer, t: torch.Tensor) -> int:
    hits = [k for k, s in enumerate(streamer.slots) if s.data_ptr() <= t.data_ptr() < s.data_ptr() + s.numel()]
    assert len(hits) == 1
    return hits[0]


def test_each_streamed_position_runs_from_one_fixed_slot(checkpoint):
    """Position p of the streamed order always runs from slot p % slots, bound once: a forward's kernels read the
    same addresses every time (what a CUDA graph of it needs). 4 streamed blocks through 3 slots: the fourth shares
    slot 0 with the first, and each forward's last blocks load the next forward's first ones."""
    model = _streaming_model(checkpoint["state"])
    blocks = model.transformer_blocks
    streamer = BlockStreamer(blocks, _source("pinned", checkpoint), RESIDENT, device="cpu", prefetch=PREFETCH)
    seen: list[tuple[int, int, int]] = []
    for i in STREAMED:
        blocks[i].register_forward_pre_hook(
            lambda module, args, i=i: seen.append(
                (i, _slot_of(streamer, module.attn1.to_q.weight), module.attn1.to_q.weight.data_ptr())
            )  # fmt: skip
        )
    for seed in range(3):
        video, audio = _forward(model, seed)
        assert torch.equal(video, checkpoint["outputs"][seed][0]) and torch.equal(audio, checkpoint["outputs"][seed][1])
    assert [(i, slot) for i, slot, _ in seen] == [(2, 0), (3, 1), (4, 2), (5, 0)] * 3
    assert len({(i, ptr) for i, _, ptr in seen}) == len(STREAMED)  # never rebound to other addresses
    assert streamer.stats().copies == 3 * len(STREAMED)
    # On the CPU (or from the file) a forward cannot be captured: said, before any capture starts.
    assert not streamer.capturable
    with pytest.raises(RuntimeError, match="cannot be captured: they need CUDA and a pinned source"):
        streamer.capture_begin()
    streamer.close()


def test_more_slots_than_streamed_blocks_hold_each_block_once(checkpoint):
    model = _streaming_model(checkpoint["state"], (4, 5))
    source = PinnedHostSource.from_file(checkpoint["single"], (4, 5))
    streamer = BlockStreamer(model.transformer_blocks, source, {0, 1, 2, 3}, device="cpu", prefetch=PREFETCH)
    assert len(streamer.slots) == 2 and streamer.streamed == (4, 5)
    for seed in range(2):
        video, audio = _forward(model, seed)
        assert torch.equal(video, checkpoint["outputs"][seed][0])
    streamer.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device (runs on the GPU machine)")
def test_a_cuda_graph_holds_the_streamed_copies_and_replays_bit_for_bit(checkpoint):
    """The forward with 4 blocks streamed from pinned memory, captured once (``StepGraph``) and replayed on new
    inputs: the same outputs as the eager streamed forward, bit for bit, and eager forwards still right after."""
    from ltx2_edge.accel.step_graph import StepGraph

    dev = torch.device("cuda")
    model = _streaming_model(checkpoint["state"])
    for i in RESIDENT:
        model.transformer_blocks[i].to(dev)
    for name, module in model.named_children():
        if name != "transformer_blocks":
            module.to(dev)
    for name, t in list(model.named_parameters(recurse=False)) + list(model.named_buffers(recurse=False)):
        setattr(model, name, torch.nn.Parameter(t.to(dev), requires_grad=False) if name in model._parameters
                else t.to(dev))  # fmt: skip
    source = PinnedHostSource.from_file(checkpoint["single"], STREAMED)
    assert source.pinned_bytes > 0
    streamer = BlockStreamer(model.transformer_blocks, source, RESIDENT, device=dev, prefetch=PREFETCH)
    assert streamer.capturable
    inputs = []
    for seed in range(4):
        video, audio = _inputs(seed)
        inputs.append(tuple(_to(m, dev) for m in (video, audio)))
    fixed_video, fixed_audio = inputs[0]

    def forward(v: torch.Tensor, a: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from dataclasses import replace

        return model(replace(fixed_video, latent=v, sigma=sigma), replace(fixed_audio, latent=a, sigma=sigma),
                     BatchedPerturbationConfig.empty(1))  # fmt: skip

    from ltx2_edge.accel.step_invariants import step_invariants

    # Rotary tables built once (ltx-core builds them on the host every forward, which no capture allows).
    with torch.no_grad(), step_invariants(model):
        eager = [forward(v.latent, a.latent, fixed_video.sigma) for v, a in inputs]
        eager = [tuple(t.clone() for t in out) for out in eager]
        copies = streamer.stats().copies
        graph = StepGraph(forward, streamer)
        graph.capture(inputs[0][0].latent, inputs[0][1].latent, fixed_video.sigma)
        for k in (1, 2, 3, 0, 2):  # other latents each replay
            out = graph.replay(inputs[k][0].latent, inputs[k][1].latent, fixed_video.sigma)
            torch.cuda.synchronize()
            assert all(torch.equal(o, e) for o, e in zip(out, eager[k], strict=True)), f"replay of input {k} differs"
        again = forward(inputs[3][0].latent, inputs[3][1].latent, fixed_video.sigma)  # eager after replays
        assert all(torch.equal(o, e) for o, e in zip(again, eager[3], strict=True))
    stats = streamer.stats()
    # The warm-up and the eager forward after replays run the hooks; five replays count their copies too.
    assert stats.copies == copies + (1 + 5 + 1) * len(STREAMED)
    graph.release()
    streamer.close()


def _to(m: Modality, dev: torch.device) -> Modality:
    from dataclasses import fields, replace

    return replace(m, **{f.name: getattr(m, f.name).to(dev) for f in fields(m)
                         if isinstance(getattr(m, f.name), torch.Tensor)})  # fmt: skip


def test_file_reads_use_half_the_cores_within_4_to_8_threads(checkpoint):
    from ltx2_edge.streaming.sources import file_readers

    assert [file_readers(c) for c in (1, 2, 8, 12, 16, 64)] == [4, 4, 4, 6, 8, 8]
    source = FileSource(checkpoint["single"], STREAMED)
    try:
        assert source.readers == file_readers()
    finally:
        source.close()
    with pytest.raises(ValueError, match="readers=0 is not allowed"):
        FileSource(checkpoint["single"], STREAMED, readers=0)
