"""The spatial latent upsampler x2: the official file format, its validation, its loader and the upsampling step.

Oracles: ltx-core's ``LatentUpsamplerConfigurator`` (which tensors a config implies), ltx-pipelines'
``ModelLedger.spatial_upsampler()`` (how the official pipelines load the file) and ``upsample_video``.
"""

from __future__ import annotations

import json
import math
import pickle
import weakref
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import ltx2_edge  # noqa: F401  (before ltx_core)
from ltx2_edge.checkpoint.configs import ltx2_config
from ltx2_edge.checkpoint.header import read_header
from ltx2_edge.checkpoint.names import UPSAMPLER_FILE
from ltx2_edge.checkpoint.upsampler_file import FIELD, check_upsampler_matches, inspect_upsampler
from ltx2_edge.checkpoint.upsampler_layout import upsampler_layout
from ltx2_edge.errors import CheckpointError, RequestError
from ltx2_edge.models.loaders import load_spatial_upsampler, load_video_encoder
from ltx2_edge.stages.upsample import upsample_latent, upsample_working_bytes
from ltx2_edge.synth.generator import make_checkpoint
from ltx2_edge.synth.init_scheme import make_tensor
from ltx2_edge.synth.upsampler_writer import upsampler_config

CPU = torch.device("cpu")
BINOMIAL_5X5 = torch.tensor([1.0, 4, 6, 4, 1]).outer(torch.tensor([1.0, 4, 6, 4, 1])) / 256


def _meta_state(config: dict) -> dict[str, tuple[int, ...]]:
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator

    with torch.device("meta"):
        model = LatentUpsamplerConfigurator.from_config(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny_up(tiny_dir) -> Path:
    return tiny_dir / UPSAMPLER_FILE


# --- (a) the file format ------------------------------------------------------------------------------------------


def test_full_plan_is_what_ltx_core_builds_and_the_official_architecture():
    config = upsampler_config("full")
    layout = upsampler_layout(config)
    assert {name: shape for name, (shape, _) in layout.items()} == _meta_state(config)
    # Facts of the official file (see upsampler_writer's docstring): rational x2 resampler, 1024 middle channels.
    assert len(layout) == 73 and "upsampler.0.weight" not in layout
    assert layout["upsampler.conv.weight"][0] == (4096, 1024, 3, 3)
    assert layout["upsampler.blur_down.kernel"] == ((1, 1, 5, 5), "fixed")
    assert layout["initial_conv.weight"][0] == (1024, 128, 3, 3, 3)
    assert layout["post_upsample_res_blocks.3.norm2.bias"] == ((1024,), "norm_bias")
    elements = sum(math.prod(shape) for shape, _ in layout.values())
    assert (elements, elements * 2) == (497_867_929, 995_735_858)  # BF16 weight bytes


def test_tiny_file_holds_exactly_the_tensors_its_config_builds(tiny_up):
    header = read_header(tiny_up)
    config = json.loads(header.metadata["config"])
    assert config == upsampler_config("tiny") and config["rational_resampler"] is True
    assert config["in_channels"] == ltx2_config("tiny")["vae"]["latent_channels"]
    assert config["mid_channels"] % 32 == 0  # GroupNorm(32, mid_channels)
    assert {name: t.shape for name, t in header.tensors.items()} == _meta_state(config)
    assert {t.dtype for t in header.tensors.values()} == {"BF16"}
    assert header.metadata["_generator"] == "ltx2-edge random weights, seed 0"
    layout = upsampler_layout(config)
    with safetensors.safe_open(tiny_up, "pt") as f:
        assert torch.equal(f.get_tensor("upsampler.blur_down.kernel").float(), BINOMIAL_5X5[None, None])
        for name in ("res_blocks.1.conv2.weight", "upsampler.conv.bias", "final_conv.weight"):
            assert torch.equal(f.get_tensor(name), make_tensor(name, layout, seed=0)), name


# --- (b) loading: ours equals the official ledger, bit for bit ------------------------------------------------------


def test_ledger_and_our_loader_give_identical_weights(tiny_up):
    from ltx_pipelines.utils.model_ledger import ModelLedger

    official = ModelLedger(torch.float32, CPU, spatial_upsampler_path=str(tiny_up)).spatial_upsampler()
    ours = load_spatial_upsampler(tiny_up, CPU, torch.float32)
    theirs, mine = official.state_dict(), ours.state_dict()
    assert list(mine) == list(theirs) and len(mine) == len(read_header(tiny_up).tensors)
    for name, tensor in theirs.items():
        assert not tensor.is_meta and mine[name].dtype == torch.float32
        assert torch.equal(mine[name], tensor), name
    assert not ours.training and not any(p.requires_grad for p in ours.parameters())


# --- (c) the upsampling step ------------------------------------------------------------------------------------------


def test_upsample_latent_is_the_official_step(tiny_dir, tiny_up):
    from ltx_core.model.upsampler import upsample_video
    from ltx_pipelines.utils.model_ledger import ModelLedger

    encoder = load_video_encoder(tiny_dir / "ltx2.safetensors", CPU, torch.float32)
    # The generated statistics are (0, 1), which would make (un)normalising invisible: give them real values.
    stats = encoder.per_channel_statistics
    g = torch.Generator().manual_seed(1)
    stats.get_buffer("mean-of-means").copy_(torch.randn(128, generator=g) * 0.3)
    stats.get_buffer("std-of-means").copy_(torch.rand(128, generator=g) + 0.5)
    latent = torch.randn(2, 128, 2, 3, 4, generator=g)

    ours = upsample_latent(latent, encoder, load_spatial_upsampler(tiny_up, CPU, torch.float32))
    official_up = ModelLedger(torch.float32, CPU, spatial_upsampler_path=str(tiny_up)).spatial_upsampler()
    with torch.no_grad():
        expected = upsample_video(latent=latent[:1], video_encoder=encoder, upsampler=official_up)
    assert ours.shape == (1, 128, 2, 6, 8) and ours.is_inference()
    assert torch.equal(ours, expected)
    assert torch.isfinite(ours).all() and 0.2 < ours.std().item() < 5.0  # random weights keep the forward O(1)
    nearest = F.interpolate(latent[:1], scale_factor=(1, 2, 2), mode="nearest")
    assert ((ours - nearest).norm() / nearest.norm()).item() > 0.5
    with pytest.raises(ValueError, match=r"not \[B, 128, F, H, W\]"):
        upsample_latent(latent[:, :64], encoder, official_up)


class _LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of tensor storages created under the mode and still referenced (what the estimate models)."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.live = self.peak = 0

    def _release(self, ptr: int) -> None:
        self.refs[ptr] -= 1
        if not self.refs[ptr]:
            del self.refs[ptr]
            self.live -= self.sizes.pop(ptr)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                ptr = t.untyped_storage().data_ptr()
                if ptr not in self.refs:
                    self.refs[ptr], self.sizes[ptr] = 0, t.untyped_storage().nbytes()
                    self.live += self.sizes[ptr]
                    self.peak = max(self.peak, self.live)
                self.refs[ptr] += 1
                weakref.finalize(t, self._release, ptr)
        return out


def test_working_bytes_by_hand():
    full = upsampler_config("full")
    # W1 at twice its size: a 13x9x16 stage-1 grid. Peak: the last post-upsample ResBlock, 16 x 1024 channels
    # on the stage-1 grid, plus the un-normalised 128-channel input copy.
    assert upsample_working_bytes(full, (1, 128, 13, 9, 16), 2) == (16 * 1024 + 128) * 1872 * 2 == 61_820_928
    # Tiny (32 middle channels): normalising the 4x-larger output dominates, 3 x 4 x 128 channels.
    assert upsample_working_bytes(upsampler_config("tiny"), (2, 128, 2, 3, 4), 4) == 12 * 128 * 24 * 4
    with pytest.raises(ValueError, match="takes 128"):
        upsample_working_bytes(full, (1, 64, 2, 3, 4), 2)


@pytest.mark.parametrize("mid, rational", [(32, True), (256, True), (256, False)])
def test_working_bytes_match_the_measured_live_tensor_peak(mid, rational):
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator
    from ltx_core.model.video_vae.ops import PerChannelStatistics

    config = dict(upsampler_config("full"), mid_channels=mid, num_blocks_per_stage=1, rational_resampler=rational)
    torch.manual_seed(0)
    upsampler = LatentUpsamplerConfigurator.from_config(config).eval()
    encoder = torch.nn.Module()
    encoder.per_channel_statistics = PerChannelStatistics(128)
    encoder.per_channel_statistics.get_buffer("std-of-means").fill_(1.5)
    encoder.per_channel_statistics.get_buffer("mean-of-means").fill_(0.1)
    latent = torch.randn(1, 128, 3, 4, 6)
    with _LiveTensorBytes() as measured:
        upsample_latent(latent, encoder, upsampler)
    estimate = upsample_working_bytes(config, tuple(latent.shape), 4)
    assert 1.0 <= measured.peak / estimate < 1.002, (measured.peak, estimate)


# --- (d) validation ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_tensors(tiny_up):
    return safetensors.torch.load_file(tiny_up), read_header(tiny_up).metadata


def _variant(tmp_path, tiny_tensors, *, drop=(), replace=None, config=None, metadata=None) -> Path:
    tensors, meta = tiny_tensors
    tensors = {k: v for k, v in tensors.items() if k not in drop} | (replace or {})
    if config is not None:
        meta = dict(meta, config=json.dumps(dict(upsampler_config("tiny"), **config)))
    path = tmp_path / "variant.safetensors"
    safetensors.torch.save_file(tensors, path, metadata=meta if metadata is None else metadata)
    return path


def _refused(path: Path, match: str) -> None:
    with pytest.raises(CheckpointError, match=match) as caught:
        inspect_upsampler(path)
    message = str(caught.value)
    assert message.startswith(f"{FIELD}=") and "\n" not in message


def test_generated_files_pass(tiny_up, tiny_dir):
    info = inspect_upsampler(tiny_up)
    assert (info.scale, info.weight_bytes) == (2.0, read_header(tiny_up).nbytes())
    assert info.config == {k: v for k, v in upsampler_config("tiny").items() if k != "_class_name"}
    check_upsampler_matches(info, ltx2_config("tiny"))
    check_upsampler_matches(info, json.loads(read_header(tiny_dir / "ltx2.safetensors").metadata["config"]))


def test_missing_path_is_a_request_error(tmp_path):
    with pytest.raises(RequestError, match=f"{FIELD}=.*an existing file") as caught:
        inspect_upsampler(tmp_path / "nope.safetensors")
    assert caught.value.field == FIELD


def test_not_safetensors_and_no_config_are_refused(tmp_path, tiny_tensors):
    (tmp_path / "up.bin").write_bytes(pickle.dumps({"w": [0.0]}, protocol=4))
    _refused(tmp_path / "up.bin", "pickle.*not safetensors")
    _refused(_variant(tmp_path, tiny_tensors, metadata={}), "no 'config' metadata: not an official latent upsampler")
    _refused(_variant(tmp_path, tiny_tensors, metadata={"config": "{oops"}), "'config' metadata is not JSON")


def test_a_transformer_checkpoint_is_named_as_such(tiny_dir, tmp_path):
    _refused(tiny_dir / "ltx2.safetensors", r"LTX-2 model checkpoint \(config sections: transformer, vae")
    path = tmp_path / "bare.safetensors"
    safetensors.torch.save_file({"model.diffusion_model.proj_out.bias": torch.zeros(2)}, path)
    _refused(path, "LTX-2 transformer checkpoint, not the latent upsampler")


def test_missing_extra_misshapen_and_integer_tensors_are_named(tmp_path, tiny_tensors):
    dropped = _variant(tmp_path, tiny_tensors, drop=("res_blocks.0.conv1.weight",))
    _refused(dropped, r"res_blocks.0.conv1.weight \(expected \[32, 32, 3, 3, 3\]\) is missing")
    extra = {"upsampler.0.weight": torch.zeros(1)}
    _refused(_variant(tmp_path, tiny_tensors, replace=extra), r"1 tensors are not in the model.*upsampler\.0\.weight")
    bad = {"final_conv.bias": torch.zeros(7, dtype=torch.bfloat16)}
    _refused(_variant(tmp_path, tiny_tensors, replace=bad), r"final_conv.bias has shape \[7\], expected \[128\]")
    ints = {"initial_norm.bias": torch.zeros(32, dtype=torch.int8)}
    _refused(_variant(tmp_path, tiny_tensors, replace=ints), "initial_norm.bias is I8")


@pytest.mark.parametrize(
    "config, match",
    [
        ({"spatial_upsample": False, "temporal_upsample": True}, "temporal-only upsampler.*need the spatial x2"),
        ({"temporal_upsample": True}, "spatio-temporal upsampler"),
        ({"spatial_scale": 1.5}, r"scales height and width by 1.5 \(spatial_scale=1.5\).*need x2"),
        ({"spatial_scale": 4.0}, "scales height and width by 4 "),
        ({"dims": 2}, "dims=2; the official spatial x2 upsampler has dims=3"),
        ({"mid_channels": 33}, "ltx-core cannot build a LatentUpsampler"),
        ({"spatial_scale": 3.0}, "ltx-core cannot build.*Unsupported scale"),
    ],
)
def test_upsamplers_the_two_stage_pipelines_cannot_use_are_refused(tmp_path, tiny_tensors, config, match):
    _refused(_variant(tmp_path, tiny_tensors, config=config), match)


def test_latent_channels_must_match_the_checkpoint_vae(tiny_up):
    config = ltx2_config("tiny")
    config["vae"]["latent_channels"] = 64
    with pytest.raises(CheckpointError, match=f"^{FIELD}=.*takes 128 latent channels but .* video VAE makes 64"):
        check_upsampler_matches(inspect_upsampler(tiny_up), config)


# --- (e) make_checkpoint --------------------------------------------------------------------------------------------


def test_make_checkpoint_writes_the_upsampler_once_per_seed(tiny_dir, tmp_path):
    assert (tiny_dir / UPSAMPLER_FILE).is_file()  # a default part
    paths = make_checkpoint("tiny", tmp_path, seed=3, parts=("upsampler",))
    assert paths.upsampler == tmp_path / UPSAMPLER_FILE and [p.name for p in tmp_path.iterdir()] == [UPSAMPLER_FILE]
    stamp = paths.upsampler.stat().st_mtime_ns
    assert make_checkpoint("tiny", tmp_path, seed=3, parts=("upsampler",)).upsampler.stat().st_mtime_ns == stamp
    with pytest.raises(CheckpointError, match="another generated checkpoint .*seed 3.*overwrite=True"):
        make_checkpoint("tiny", tmp_path, seed=4, parts=("upsampler",))
    make_checkpoint("tiny", tmp_path, seed=4, parts=("upsampler",), overwrite=True)
    assert read_header(paths.upsampler).metadata["_generator"].endswith("seed 4")
    name = "res_blocks.0.conv1.weight"
    with safetensors.safe_open(paths.upsampler, "pt") as a, safetensors.safe_open(tiny_dir / UPSAMPLER_FILE, "pt") as b:
        assert not torch.equal(a.get_tensor(name), b.get_tensor(name))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    safetensors.torch.save_file({"w": torch.zeros(1)}, foreign / UPSAMPLER_FILE)
    with pytest.raises(CheckpointError, match="not written by this generator"):
        make_checkpoint("tiny", foreign, parts=("upsampler",), overwrite=True)
