"""Writes a random-weight spatial latent upsampler x2 in the official format (``ltx-2-spatial-upscaler-x2-1.0``).

The two-stage pipelines upsample the stage-1 latent with ``LatentUpsampler``, loaded by ltx-pipelines'
``ModelLedger.spatial_upsampler()`` from its own file: the module's state dict under its own names (no prefix),
every tensor BF16, and the constructor arguments as JSON under the metadata key ``"config"`` (ltx-core's
``SafetensorsModelStateDictLoader.metadata`` reads exactly that key). ``upsampler_layout`` derives the tensors
from the config with ltx-core's own builder, so a file written here loads in ltx-core unchanged, and so would
the real one.

What the full-size config is based on (the real file cannot be downloaded here):
- ``in_channels=128``, ``mid_channels=1024``, ``num_blocks_per_stage=4``, ``dims=3``: diffusers'
  ``scripts/convert_ltx2_to_diffusers.py`` (``get_ltx2_spatial_latent_upsampler_config("2.0")``), which loads the
  original file with ``strict=True``; that is 497,867,929 parameters (995.7 MB in BF16), the official
  file's 0.5B / 1.0 GB (docs/checkpoint-generator.md describes the file). Sure.
- ``rational_resampler=true`` with ``spatial_scale=2.0``: the x2 goes through ``SpatialRationalResampler``
  (tensors ``upsampler.conv.*`` and the 5x5 ``upsampler.blur_down.kernel``; 73 tensors in all), not the
  pixel-shuffle ``Sequential`` (``upsampler.0.*``). The same diffusers script sets ``use_rational_resampler=True``
  for 2.0 (False for the later 2.3/2.5 files), DiffSynth-Studio loads this file with ``rational_resampler``
  defaulting to True, and third-party ports describe it so; and ltx-pipelines builds it through
  ``from_config``, whose default is False, so the real config must say true. Fairly sure, not from the file.
- The metadata's key set (``_class_name`` plus the eight ``LatentUpsamplerConfigurator`` arguments): quoted
  headers of later official upsampler files carry exactly these keys. Likely; only the arguments matter to
  ltx-core, and ``inspect_upsampler`` reads a real file's own config whatever its values.
``tiny`` keeps the structure (rational x2, 3-D convolutions, the tiny VAE's 128 latent channels) at 32 middle
channels (one channel per GroupNorm group) and two blocks a stage.

Initialisation is the project's (``init_scheme``): kaiming-uniform convolutions, GroupNorm at (1, 0), so every
GroupNorm re-normalises its input and a forward stays O(1). This module never replaces a file it did not write.
"""

from __future__ import annotations

import json
from pathlib import Path

from ltx2_edge.checkpoint.configs import SIZES, ltx2_config
from ltx2_edge.checkpoint.upsampler_layout import fixed_tensors, upsampler_layout
from ltx2_edge.errors import RequestError
from ltx2_edge.synth.safetensors_writer import Progress, generator_tag, keep_existing, write_safetensors

_FULL = {
    "_class_name": "LatentUpsampler",
    "in_channels": 128,
    "mid_channels": 1024,
    "num_blocks_per_stage": 4,
    "dims": 3,
    "spatial_upsample": True,
    "temporal_upsample": False,
    "spatial_scale": 2.0,
    "rational_resampler": True,
}


def upsampler_config(size: str) -> dict:
    """The upsampler file's ``config`` metadata for ``size`` ("tiny" or "full"; a fresh dict each call)."""
    if size not in SIZES:
        raise RequestError("size", size, f"one of {', '.join(SIZES)}")
    config = dict(_FULL)
    if size == "tiny":
        # in_channels must be the video VAE's latent width: the upsampler runs on that VAE's latents.
        config.update(in_channels=ltx2_config("tiny")["vae"]["latent_channels"], mid_channels=32)
        config.update(num_blocks_per_stage=2)
    return config


def upsampler_metadata(size: str, seed: int) -> dict[str, str]:
    """The file's complete safetensors metadata: the config and this generator's tag."""
    return {"config": json.dumps(upsampler_config(size)), "_generator": generator_tag(seed)}


def write_spatial_upsampler(
    size: str,
    path: Path,
    seed: int = 0,
    *,
    device: str = "cpu",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Write a random spatial upsampler x2 of ``size`` to ``path`` (streamed, renamed into place); return ``path``.

    A file already there with the same size and seed is kept as is; another generated one is replaced only with
    ``overwrite=True``; a file this generator did not write is never replaced. ``device`` is where values are
    drawn (the bytes do not depend on it); ``progress(file, done, total)`` is called after each tensor.
    """
    config = upsampler_config(size)
    path = Path(path)
    metadata = upsampler_metadata(size, seed)
    if keep_existing(path, metadata, overwrite):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    layout = upsampler_layout(config)
    write_safetensors(path, layout, metadata, seed=seed, device=device, progress=progress, fixed=fixed_tensors(config))
    return path
