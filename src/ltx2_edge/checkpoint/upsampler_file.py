"""Refuses a bad spatial upsampler file before a single weight is loaded, reading only its header.

The two-stage pipelines need ltx-core's ``LatentUpsampler`` doubling height and width (the official
``ltx-2-spatial-upscaler-x2-1.0.safetensors``). ``inspect_upsampler`` checks a file against the tensors its own
``config`` metadata implies (``upsampler_layout``: ltx-core's builder on ``meta``) and against what the pipelines
need; ``check_upsampler_matches`` checks it against the transformer checkpoint's video VAE. Every refusal is one
line naming the setting (``spatial-upsampler-path``), what was found and what to pass instead.
This module never reads tensor data and never unpickles anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ltx2_edge.checkpoint.header import Header, read_header
from ltx2_edge.checkpoint.names import TRANSFORMER_PREFIX, UPSAMPLER_FILE
from ltx2_edge.checkpoint.upsampler_layout import build_upsampler_meta, resolved_config, spatial_factor
from ltx2_edge.errors import CheckpointError, RequestError

FIELD = "--spatial-upsampler-path"
FLOAT_DTYPES = frozenset({"BF16", "F16", "F32"})
_MODEL_SECTIONS = ("transformer", "vae", "audio_vae", "vocoder")  # an LTX-2 model checkpoint's config sections


@dataclass(frozen=True)
class UpsamplerInfo:
    """A checked spatial upsampler file.

    ``config`` is the file's config with ltx-core's defaults filled in (exactly what
    ``LatentUpsamplerConfigurator`` builds); ``scale`` is the factor its forward applies to height and width.
    """

    path: Path
    config: dict = field(repr=False)
    header: Header = field(repr=False)
    weight_bytes: int
    scale: float


def _fail(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"{FIELD}={str(path)!r}: {problem}")


def _config(header: Header) -> dict:
    path = header.path
    raw = header.metadata.get("config")
    if raw is None:
        if any(name.startswith(TRANSFORMER_PREFIX) for name in header.tensors):
            raise _fail(path, f"this is an LTX-2 transformer checkpoint, not the latent upsampler ({UPSAMPLER_FILE})")
        raise _fail(path, f"the file has no 'config' metadata: not an official latent upsampler (use {UPSAMPLER_FILE})")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _fail(path, f"its 'config' metadata is not JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise _fail(path, "its 'config' metadata is not a JSON object")
    sections = [key for key in _MODEL_SECTIONS if isinstance(config.get(key), dict)]
    if sections:
        raise _fail(
            path,
            f"this is an LTX-2 model checkpoint (config sections: {', '.join(sections)}), not the latent upsampler; "
            f"pass {UPSAMPLER_FILE} here and the model file as the checkpoint",
        )
    return config


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def inspect_upsampler(path: str | Path) -> UpsamplerInfo:
    """Check a latent upsampler file by its header; raise a one-line error naming ``spatial-upsampler-path``.

    Refused: a missing path (``RequestError``), a file that is not safetensors, has no ``config`` metadata, is
    an LTX-2 model checkpoint, builds no ltx-core ``LatentUpsampler``, upsamples in time, scales height and width
    by anything but 2, is not 3-D, or misses a tensor, holds one too many or a misshapen one (``CheckpointError``).
    """
    path = Path(path)
    if not path.is_file():
        raise RequestError(FIELD, str(path), f"an existing file: the spatial upsampler x2 ({UPSAMPLER_FILE})")
    try:
        header = read_header(path)
    except CheckpointError as exc:
        raise _fail(path, str(exc)) from exc
    config = _config(header)
    try:
        model = build_upsampler_meta(config)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise _fail(path, f"ltx-core cannot build a LatentUpsampler from its config ({exc})") from exc
    resolved = resolved_config(model)
    scale = spatial_factor(model)
    if resolved["temporal_upsample"]:
        kind = "spatio-temporal" if resolved["spatial_upsample"] else "temporal-only"
        raise _fail(
            path,
            f"this is a {kind} upsampler (temporal_upsample=true, spatial_upsample="
            f"{str(resolved['spatial_upsample']).lower()}); the two-stage pipelines need the spatial x2 upsampler "
            f"({UPSAMPLER_FILE})",
        )
    if resolved["dims"] != 3:
        # ltx-core's 2-D variant cannot run the rational resampler, and no official file uses it.
        raise _fail(path, f"this upsampler has dims={resolved['dims']}; the official spatial x2 upsampler has dims=3")
    if scale != 2.0:
        raise _fail(
            path,
            f"this upsampler scales height and width by {scale:g} (spatial_scale={resolved['spatial_scale']:g}); "
            f"the two-stage pipelines need x2 ({UPSAMPLER_FILE})",
        )
    expected = {name: tuple(t.shape) for name, t in model.state_dict(keep_vars=True).items()}
    for name, shape in expected.items():
        info = header.tensors.get(name)
        if info is None:
            raise _fail(path, f"tensor {name} (expected {_shape(shape)}) is missing: the file does not fit its config")
        if info.shape != shape:
            raise _fail(path, f"tensor {name} has shape {_shape(info.shape)}, expected {_shape(shape)} by its config")
        if info.dtype not in FLOAT_DTYPES:
            raise _fail(path, f"tensor {name} is {info.dtype}; allowed: {', '.join(sorted(FLOAT_DTYPES))}")
    extra = sorted(set(header.tensors) - set(expected))
    if extra:
        raise _fail(
            path, f"{len(extra)} tensors are not in the model its config builds (first: {extra[0]}): wrong file?"
        )
    return UpsamplerInfo(path, resolved, header, header.nbytes(), scale)


def check_upsampler_matches(info: UpsamplerInfo, checkpoint_config: dict) -> None:
    """Raise unless the upsampler takes the latents of the checkpoint's video VAE (its ``config`` metadata)."""
    latent = checkpoint_config.get("vae", {}).get("latent_channels", 128)  # ltx-core's VAE default
    if info.config["in_channels"] != latent:
        raise _fail(
            info.path,
            f"the upsampler takes {info.config['in_channels']} latent channels but the checkpoint's video VAE "
            f"makes {latent}; pass the upsampler made for this checkpoint",
        )
