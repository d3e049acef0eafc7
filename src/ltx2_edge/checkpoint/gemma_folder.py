"""What a generated Gemma 3 folder contains, laid out like the official Gemma 3 12B release.

``gemma_folder_plan(size)`` describes every file: the JSON files (``config.json``, ``generation_config.json``,
``preprocessor_config.json``, ``processor_config.json``), the tokenizer files (``tokenizer.py``), and the weight
shards ``model-0000k-of-0000N.safetensors`` (vision tower and projector included: the official pipeline builds
the whole ``Gemma3ForConditionalGeneration``) with ``model.safetensors.index.json``.
This module only describes; ``generator.py`` writes. It never allocates weights.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from ltx2_edge.checkpoint.configs import Size, gemma_config
from ltx2_edge.checkpoint.layout import Shape, gemma_layout
from ltx2_edge.checkpoint.tokenizer import tokenizer_files

# transformers' default max_shard_size "5GB" (decimal), which the official release was saved with.
MAX_SHARD_BYTES = 5 * 10**9
BF16_BYTES = 2


@dataclass(frozen=True)
class Shard:
    """One weight file: its name and the tensors it holds (name -> (shape, role)), in module order."""

    file_name: str
    tensors: dict[str, tuple[Shape, str]]

    @property
    def nbytes(self) -> int:
        return sum(math.prod(shape) * BF16_BYTES for shape, _ in self.tensors.values())


@dataclass(frozen=True)
class GemmaFolderPlan:
    """Every file of a generated Gemma folder: small files as bytes, weight shards as tensor lists."""

    config: dict
    layout: dict[str, tuple[Shape, str]]
    files: dict[str, bytes]  # file name -> content, the index included
    shards: tuple[Shard, ...]


def _json_bytes(doc: dict) -> bytes:
    # transformers' own formatting for config and index files.
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _image_size(config: dict) -> int:
    return config["vision_config"]["image_size"]


def _generation_config() -> dict:
    return {
        "bos_token_id": 2,
        "cache_implementation": "hybrid",
        "do_sample": True,
        "eos_token_id": [1, 106],
        "pad_token_id": 0,
        "top_k": 64,
        "top_p": 0.95,
        "transformers_version": "4.57.6",
    }


def _preprocessor_config(config: dict) -> dict:
    side = _image_size(config)
    return {
        "do_convert_rgb": None,
        "do_normalize": True,
        "do_pan_and_scan": None,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "Gemma3ImageProcessor",
        "image_seq_length": config["mm_tokens_per_image"],
        "image_std": [0.5, 0.5, 0.5],
        "pan_and_scan_max_num_crops": None,
        "pan_and_scan_min_crop_size": None,
        "pan_and_scan_min_ratio_to_activate": None,
        "processor_class": "Gemma3Processor",
        "resample": 2,
        "rescale_factor": 1 / 255,
        "size": {"height": side, "width": side},
    }


def plan_shards(layout: dict[str, tuple[Shape, str]], max_bytes: int = MAX_SHARD_BYTES) -> tuple[Shard, ...]:
    """Split ``layout`` into shards of at most ``max_bytes`` (bf16), filled greedily in module order."""
    groups: list[dict[str, tuple[Shape, str]]] = [{}]
    used = 0
    for name, (shape, role) in layout.items():
        size = math.prod(shape) * BF16_BYTES
        if groups[-1] and used + size > max_bytes:
            groups.append({})
            used = 0
        groups[-1][name] = (shape, role)
        used += size
    n = len(groups)
    return tuple(Shard(f"model-{k + 1:05d}-of-{n:05d}.safetensors", g) for k, g in enumerate(groups))


def gemma_folder_plan(size: Size, max_shard_bytes: int = MAX_SHARD_BYTES) -> GemmaFolderPlan:
    """The complete description of the Gemma folder for ``size`` ("tiny" or "full")."""
    config = gemma_config(size)
    layout = gemma_layout(config)
    shards = plan_shards(layout, max_shard_bytes)
    index = {
        "metadata": {"total_size": sum(s.nbytes for s in shards)},
        "weight_map": {name: s.file_name for s in shards for name in s.tensors},
    }
    files = {
        "config.json": _json_bytes(config),
        "generation_config.json": _json_bytes(_generation_config()),
        "preprocessor_config.json": _json_bytes(_preprocessor_config(config)),
        "processor_config.json": _json_bytes(
            {"image_seq_length": config["mm_tokens_per_image"], "processor_class": "Gemma3Processor"}
        ),
        "model.safetensors.index.json": _json_bytes(index),
        **tokenizer_files(),
    }
    return GemmaFolderPlan(config=config, layout=layout, files=files, shards=shards)
