"""streaming/tensor_reader.py: tensors read through the staging ring equal safetensors' own, in the order asked."""

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ltx2_edge.checkpoint.header import TensorInfo, read_header
from ltx2_edge.errors import CheckpointError
from ltx2_edge.streaming.tensor_reader import TensorReader, plan_batches


def _info(name: str, begin: int, nbytes: int) -> TensorInfo:
    return TensorInfo(name, "U8", (nbytes,), begin, begin + nbytes)


def test_plan_splits_big_tensors_and_coalesces_adjacent_reads():
    entries = [(0, _info("a", 100, 10)), (0, _info("b", 110, 25)), (1, _info("c", 8, 0)), (1, _info("d", 8, 4))]
    batches = plan_batches(entries, chunk_bytes=16)
    got = [[(p.entry, p.tensor_offset, p.staging_offset, p.n) for p in b.pieces] for b in batches]
    assert got == [[(0, 0, 0, 10), (1, 0, 10, 6)], [(1, 6, 0, 16)], [(1, 22, 0, 3), (2, 0, 3, 0), (3, 0, 3, 4)]]
    # a and the start of b are adjacent in file 0: one preadv with two pieces; the empty tensor reads nothing
    assert [(r.fd_index, r.file_offset, r.pieces) for r in batches[0].runs] == [(0, 100, ((0, 10), (10, 6)))]
    assert [(r.fd_index, r.file_offset, r.pieces) for r in batches[2].runs] == [(0, 132, ((0, 3),)),
                                                                                (1, 8, ((3, 4),))]  # fmt: skip
    with pytest.raises(ValueError, match="chunk_bytes=0"):
        plan_batches(entries, 0)


@pytest.fixture
def two_files(tmp_path):
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(33, 17, generator=g).to(torch.bfloat16), "scale": torch.tensor(0.5),
         "q": torch.randn(40, 8, generator=g).to(torch.float8_e4m3fn), "empty": torch.zeros(0, 3)}  # fmt: skip
    b = {"mask": torch.rand(7, generator=g) > 0.5, "ids": torch.arange(11, dtype=torch.int64),
         "big": torch.randn(300, generator=g)}  # fmt: skip
    save_file(a, tmp_path / "a.safetensors")
    save_file(b, tmp_path / "b.safetensors")
    return tmp_path / "a.safetensors", tmp_path / "b.safetensors"


@pytest.mark.parametrize(("chunk", "depth"), [(64, 2), (1000, 3), (1 << 20, 4)])
def test_tensors_equal_safetensors_in_the_order_asked(two_files, chunk, depth):
    order = [(two_files[1], "big"), (two_files[0], "q"), (two_files[0], "empty"), (two_files[0], "w"),
             (two_files[1], "mask"), (two_files[0], "scale"), (two_files[1], "ids")]  # fmt: skip
    headers = {p: read_header(p) for p in two_files}
    with TensorReader("cpu", chunk_bytes=chunk, depth=depth) as reader:
        got = list(reader.read([(p, headers[p].tensors[n]) for p, n in order]))
        again = next(reader.read([(two_files[0], headers[two_files[0]].tensors["w"])]))  # a second read, same reader
    assert len(got) == len(order)
    for (path, name), tensor in zip(order, got, strict=True):
        with safe_open(str(path), framework="pt") as f:
            want = f.get_tensor(name)
        assert tensor.dtype == want.dtype and tensor.shape == want.shape, name
        assert torch.equal(tensor.reshape(-1).view(torch.uint8), want.reshape(-1).view(torch.uint8)), (
            name
        )  # bit for bit (fp8 has no ==)
    assert torch.equal(again, got[3])
    assert reader.bytes_read == sum(t.numel() * t.element_size() for t in got) + again.numel() * 2


def test_truncated_file_is_a_checkpoint_error(two_files, tmp_path):
    info = read_header(two_files[1]).tensors["big"]
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(two_files[1].read_bytes()[: info.begin + 100])
    with TensorReader("cpu", chunk_bytes=256) as reader, pytest.raises(CheckpointError, match="truncated"):
        list(reader.read([(cut, info)]))


def test_stopping_early_leaves_the_reader_usable(two_files):
    header = read_header(two_files[1])
    entries = [(two_files[1], header.tensors[n]) for n in ("big", "ids", "mask")]
    with TensorReader("cpu", chunk_bytes=128, depth=2) as reader:
        first = reader.read(entries)
        next(first)
        first.close()  # a caller that fails midway: pending reads are cancelled or waited for
        assert [t.shape for t in reader.read(entries)] == [torch.Size([300]), torch.Size([11]), torch.Size([7])]
    with pytest.raises(ValueError, match="depth=1"):
        TensorReader("cpu", depth=1)
