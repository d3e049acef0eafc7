"""Writes random-weight checkpoints in the exact official format: ``ltx2.safetensors``, a Gemma 3 folder and the
spatial latent upsampler (``upsampler_writer``); the file writer itself is ``safetensors_writer``.

No machine here can download weights, so tests, the demo (``tiny``) and GPU benchmarks (``full``: the real
LTX-2 19B and Gemma 3 12B shapes) run on files made here; our loaders and ltx-core load them unchanged.

Files are streamed: the safetensors header is computed from shapes alone and written first, then each tensor
is generated chunk by chunk (on ``device``; values do not depend on it, see ``init_scheme``) and appended, so
memory holds one chunk, never a whole tensor. Everything goes to a temporary name that is renamed into place
only when complete: a reader never sees a half-written file. Writing never deletes anything it did not write.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ltx2_edge.atomic import temp_path
from ltx2_edge.checkpoint.configs import SIZES, Size, gemma_config, ltx2_config
from ltx2_edge.checkpoint.gemma_folder import gemma_folder_plan
from ltx2_edge.checkpoint.layout import expected_tensors
from ltx2_edge.checkpoint.names import MODEL_VERSION, UPSAMPLER_FILE
from ltx2_edge.errors import CheckpointError, RequestError
from ltx2_edge.synth.parts import LTX2_FILE, PARTS
from ltx2_edge.synth.safetensors_writer import Progress, generated_tag, generator_tag, keep_existing, write_safetensors
from ltx2_edge.synth.upsampler_writer import write_spatial_upsampler

_SHARD_NAME = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


@dataclass(frozen=True)
class CheckpointPaths:
    """Where a generated checkpoint lives: the single-file LTX-2 checkpoint, the Gemma folder, the upsampler."""

    size: str
    ltx2: Path
    gemma_dir: Path

    @property
    def upsampler(self) -> Path:
        """The spatial upsampler x2 file, always beside the LTX-2 checkpoint."""
        return self.ltx2.with_name(UPSAMPLER_FILE)


def _ltx2_metadata(size: Size, seed: int) -> dict[str, str]:
    return {"config": json.dumps(ltx2_config(size)), "model_version": MODEL_VERSION, "_generator": generator_tag(seed)}


def _write_ltx2(size: Size, path: Path, seed: int, device: str, overwrite: bool, progress: Progress | None) -> None:
    metadata = _ltx2_metadata(size, seed)
    if keep_existing(path, metadata, overwrite):
        return
    layout = expected_tensors(ltx2_config(size), gemma_config(size)["text_config"])
    write_safetensors(path, layout, metadata, seed=seed, device=device, progress=progress)


def _gemma_is(folder: Path, plan_files: dict[str, bytes], shard_names: Iterable[str], tag: str) -> bool:
    """True when ``folder`` is a complete generated Gemma folder with this plan and tag."""
    if not all((folder / n).is_file() and (folder / n).read_bytes() == b for n, b in plan_files.items()):
        return False
    return all((folder / n).is_file() and generated_tag(folder / n) == tag for n in shard_names)


def _write_gemma(size: Size, folder: Path, seed: int, device: str, overwrite: bool, progress: Progress | None) -> None:
    plan = gemma_folder_plan(size)
    tag = generator_tag(seed)
    shard_names = [s.file_name for s in plan.shards]
    if folder.exists() and any(folder.iterdir()):
        weights = list(folder.glob("*.safetensors"))
        foreign = [p.name for p in folder.iterdir() if p.name not in plan.files and not _SHARD_NAME.fullmatch(p.name)]
        if not weights or foreign or any(generated_tag(p) is None for p in weights):
            raise CheckpointError(
                f"refusing to replace {folder}: it is not a Gemma folder written by this generator "
                f"(or holds other files: {', '.join(sorted(foreign)[:3]) or 'none'}); move it away"
            )
        if not overwrite:
            if _gemma_is(folder, plan.files, shard_names, tag):
                return  # generated here before with the same size and seed
            raise CheckpointError(f"{folder} holds another generated Gemma folder; pass overwrite=True to replace it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    # A sibling temporary folder: same filesystem (e.g. /dev/shm), so the final rename is atomic.
    tmp = temp_path(folder)  # short whatever the folder's name
    tmp.mkdir()
    try:
        for name, content in plan.files.items():
            (tmp / name).write_bytes(content)
        metadata = {"format": "pt", "_generator": tag}
        for shard in plan.shards:
            write_safetensors(
                tmp / shard.file_name, shard.tensors, metadata, seed=seed, device=device, progress=progress
            )
        if folder.exists() and not any(folder.iterdir()):
            folder.rmdir()  # an empty folder made ready for us (a mount point is never empty)
        if folder.exists():
            old = temp_path(folder, "backup")
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old)
        else:
            tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def make_checkpoint(
    size: str,
    out_dir: Path,
    *,
    seed: int = 0,
    device: str = "cpu",
    overwrite: bool = False,
    progress: Progress | None = None,
    parts: tuple[str, ...] = PARTS,
    gemma_dir: Path | None = None,
) -> CheckpointPaths:
    """Generate ``out_dir/ltx2.safetensors``, the Gemma folder (``out_dir/gemma`` unless ``gemma_dir``) and the
    spatial upsampler ``out_dir/UPSAMPLER_FILE``.

    ``size``: "tiny" (a few MB, seconds on a CPU) or "full" (LTX-2 19B: ~43 GB file; Gemma 3 12B: ~24 GB;
    upsampler ~1 GB). ``parts`` picks what to write ("ltx2", "gemma", "upsampler"), so each can go to its own
    disk. ``device`` is where values are generated ("cuda" is much faster for "full"; the bytes are the same).
    A part that already exists with the same size and seed is kept as is; one generated otherwise is replaced
    only with ``overwrite=True``; anything not written by this generator is never replaced.
    ``progress(file, done, total)`` is called after each tensor.
    """
    if size not in SIZES:
        raise RequestError("--size", size, f"one of {', '.join(SIZES)}")
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise RequestError("--parts", parts, f"a non-empty tuple of {', '.join(PARTS)}")
    out_dir = Path(out_dir)
    paths = CheckpointPaths(size, out_dir / LTX2_FILE, Path(gemma_dir) if gemma_dir else out_dir / "gemma")
    if "ltx2" in parts:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_ltx2(size, paths.ltx2, seed, device, overwrite, progress)
    if "gemma" in parts:
        _write_gemma(size, paths.gemma_dir, seed, device, overwrite, progress)
    if "upsampler" in parts:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_spatial_upsampler(size, paths.upsampler, seed, device=device, overwrite=overwrite, progress=progress)
    return paths
