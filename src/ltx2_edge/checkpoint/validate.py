"""Refuses bad checkpoints and Gemma folders before a single weight is loaded, reading only headers.

``inspect_checkpoint`` checks an LTX-2 19B single-file checkpoint against the tensors its own ``config``
metadata implies (``layout.expected_tensors``); ``inspect_gemma_folder`` checks a Gemma 3 folder the way
ltx-core finds its files. Every refusal is a one-line ``CheckpointError`` naming the file, the first bad tensor
with its expected and actual shape, and what to do. Extra tensors are allowed (official files carry unused
VAE statistics; FP8 files carry ``*.weight_scale``/``*.input_scale``), and 2-D Linear weights may be 8-bit.
This module never reads tensor data and never unpickles anything.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ltx2_edge.checkpoint.header import Header, TensorInfo, read_header
from ltx2_edge.checkpoint.layout import LTX23_UNSUPPORTED, Shape, expected_tensors, gemma_layout
from ltx2_edge.errors import CheckpointError, RequestError

FAMILY = "LTX-2 19B"
FLOAT_DTYPES = frozenset({"BF16", "F16", "F32"})
EIGHT_BIT_DTYPES = frozenset({"F8_E4M3", "F8_E5M2", "I8"})
_FEATURE_EXTRACTOR = "text_embedding_projection.aggregate_embed.weight"
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"
_PRECISION_OF = {"F8_E4M3": "fp8", "I8": "int8"}
_TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json")
# Gemma 3 12B has 3840 / 48 / 16 / 8 / 256 / 15360 / 262208; these leave room for every Gemma 3 size.
_GEMMA_SIZE_LIMITS = {"hidden_size": 65536, "num_hidden_layers": 1024, "num_attention_heads": 1024,
                      "num_key_value_heads": 1024, "head_dim": 4096, "intermediate_size": 1 << 20,
                      "vocab_size": 1 << 22, "image_size": 16384, "patch_size": 1024}  # fmt: skip


@dataclass(frozen=True)
class CheckpointInfo:
    """A checked LTX-2 checkpoint: its header, its config, and what it holds beyond the model's tensors."""

    path: Path
    header: Header = field(repr=False)
    config: dict = field(repr=False)
    model_version: str
    family: str = FAMILY
    quantized: bool = False  # some Linear weights are stored in 8 bits
    extra: tuple[str, ...] = ()  # tensors no ltx-core module reads (scales, unused statistics)


@dataclass(frozen=True)
class GemmaInfo:
    """A checked Gemma 3 folder: its config, resolved text config, weight shards and tokenizer folder."""

    root: Path
    config: dict = field(repr=False)
    text_config: dict = field(repr=False)
    shards: tuple[Path, ...]
    tokenizer_dir: Path
    has_vision: bool  # the official pipeline builds the vision tower too; our text path does not need it


def _shape(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _check_tensors(
    where: Path, expected: dict[str, tuple[Shape, str]], found: dict[str, TensorInfo], what: str
) -> bool:
    """Raise for the first missing, misshapen or wrongly typed tensor; return whether any is 8-bit."""
    quantized = False
    for name, (shape, role) in expected.items():
        info = found.get(name)
        if info is None:
            raise CheckpointError(
                f"{where}: tensor {name} (expected shape {_shape(shape)}) is missing: not a complete {what}"
            )
        if info.shape != shape:
            raise CheckpointError(
                f"{where}: tensor {name} has shape {_shape(info.shape)}, expected {_shape(shape)} for {what}"
            )
        if info.dtype in EIGHT_BIT_DTYPES and role == "weight" and len(shape) == 2:
            quantized = True
        elif info.dtype not in FLOAT_DTYPES:
            raise CheckpointError(
                f"{where}: tensor {name} is {info.dtype}; allowed: {', '.join(sorted(FLOAT_DTYPES))}"
                f" (8-bit {', '.join(sorted(EIGHT_BIT_DTYPES))} only for 2-D Linear weights)"
            )
    return quantized


def _config(header: Header) -> dict:
    raw = header.metadata.get("config")
    if raw is None:
        raise CheckpointError(
            f"{header.path} has no 'config' metadata: not an LTX-2 checkpoint (use ltx-2-19b-dev.safetensors)"
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{header.path}: its 'config' metadata is not JSON ({exc})") from exc
    if not isinstance(config, dict) or not isinstance(config.get("transformer"), dict):
        raise CheckpointError(
            f"{header.path}: its 'config' metadata has no 'transformer' section: not an LTX-2 checkpoint"
        )
    return config


def inspect_checkpoint(path: str | Path, gemma_text_config: dict | None = None) -> CheckpointInfo:
    """Check an LTX-2 19B single-file checkpoint by its header; raise ``CheckpointError`` on the first problem.

    With ``gemma_text_config`` the feature extractor's input width is checked against that Gemma; without it,
    only its output width is (``check_text_encoder_fits`` compares with a Gemma folder later).
    """
    header = read_header(path)
    config = _config(header)
    version = header.metadata.get("model_version", "")
    if version.startswith("2.3") or "caption_proj_before_connector" in config["transformer"]:
        raise CheckpointError(f"{header.path}: {LTX23_UNSUPPORTED}")
    text = gemma_text_config
    found = header.tensors.get(_FEATURE_EXTRACTOR)
    if text is None and found is not None and len(found.shape) == 2:
        # Size the expectation from the file, so the check below covers only the output width.
        text = {"hidden_size": found.shape[1], "num_hidden_layers": 0}
    try:
        expected = expected_tensors(config, text)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{header.path}: its config is not an {FAMILY} config ({exc!r})") from exc
    quantized = _check_tensors(header.path, expected, header.tensors, f"an {FAMILY} checkpoint")
    extra = tuple(name for name in header.tensors if name not in expected)
    return CheckpointInfo(header.path, header, config, version, FAMILY, quantized, extra)


def _find(root: Path, pattern: str) -> Path | None:
    # The same search ltx-core does (utils.find_matching_file): the first recursive match.
    return next(iter(root.rglob(pattern)), None)


def stored_precision(header: Header) -> str | None:
    """``fp8`` or ``int8`` for a pre-quantized file (its 2-D ``*.weight`` tensors in 8 bits), None for a float
    one. Headers only. ``CheckpointError`` for a file mixing both (no run reads that)."""
    kinds = {_PRECISION_OF[t.dtype] for t in header.tensors.values()
             if t.dtype in _PRECISION_OF and t.name.endswith(".weight") and len(t.shape) == 2}  # fmt: skip
    if len(kinds) > 1:
        raise CheckpointError(f"{header.path} holds both fp8 and int8 weights: convert the BF16 original again "
                              "with `ltx2-edge quantize`")  # fmt: skip
    return kinds.pop() if kinds else None


def check_precision_matches(headers: Iterable[Header], precision: str, requested: str | None = None) -> None:
    """Refuse, before any weight is read, a run whose weight precision differs from a pre-quantized file's.

    ``headers``: the checkpoint's header (``CheckpointInfo.header``) and the Gemma shards' (``read_header`` of
    each of ``GemmaInfo.shards``). ``precision``: what the run uses (``resolve_precision``'s answer);
    ``requested``: the ``--quantization`` value it came from (``auto`` resolves per device). A float file takes
    any precision (it is quantized at load); an fp8 or int8 file runs only at its own. ``RequestError`` naming
    ``--quantization``, the file, what it holds and the flag value that runs it.
    """
    asked = requested if requested is not None else precision
    for header in headers:
        stored = stored_precision(header)
        if stored is None or stored == precision:
            continue
        means = f" (which means {precision} on this device)" if asked != precision else ""
        if asked == stored:  # asked for the file's precision, but this device runs another (fp8 without FP8 cores)
            fix = f"this device cannot run {stored} weights: use the BF16 checkpoint (quantized at load)"
        else:
            fix = f"--quantization {stored}, or the BF16 checkpoint for {precision}"
        raise RequestError("--quantization", asked, f"{header.path.name} is pre-quantized to {stored} and this "
                           f"run asks for {precision}{means}: {fix}")  # fmt: skip


def _check_gemma_config(path: Path, config: dict, hint: str) -> None:
    """The sections and sizes a Gemma 3 model is built from: objects, and positive integers no larger than
    ``_GEMMA_SIZE_LIMITS`` (a model is built on ``meta`` from them: a million layers would take minutes)."""
    for section in ("text_config", "vision_config"):
        sub = config.get(section)
        if section == "vision_config" and sub is None:
            continue
        if not isinstance(sub, dict):
            raise CheckpointError(f"{path}: its {section} is {type(sub).__name__}, not an object: {hint}")
        for key, limit in _GEMMA_SIZE_LIMITS.items():
            value = sub.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
                raise CheckpointError(f"{path}: {section}.{key} is {value!r}; a Gemma 3 config has a positive "
                                      f"integer there (at most {limit}): {hint}")  # fmt: skip


def check_not_lfs_pointer(path: Path) -> bytes:
    """``CheckpointError`` if ``path`` is a git-lfs pointer (a clone without git-lfs holds those instead of the
    files) or cannot be read; returns its first bytes (empty for an empty file)."""
    try:
        with path.open("rb") as f:
            head = f.read(len(_LFS_POINTER))
    except OSError as exc:
        raise CheckpointError(f"{path} is not readable ({exc.strerror or exc})") from exc
    if head == _LFS_POINTER:
        raise CheckpointError(f"{path} is a git-lfs pointer, not the file itself: run `git lfs pull` in its folder "
                              "(or download it again)")  # fmt: skip
    return head


def check_tokenizer_files(folder: Path) -> None:
    """Refuse tokenizer files that cannot load: a git-lfs pointer instead of the file (a clone without git-lfs),
    an empty file, or a ``tokenizer.json``/``tokenizer_config.json`` that is not a JSON object (a cut download)."""
    for name in _TOKENIZER_FILES:
        path = folder / name
        if not path.is_file():
            continue
        head = check_not_lfs_pointer(path)
        if not head:
            raise CheckpointError(f"{path} is empty: download the Gemma folder again")
        if name.endswith(".json"):
            try:
                doc = json.loads(path.read_bytes())
            except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                raise CheckpointError(f"{path} is not JSON ({exc}): the download was cut short or the file was "
                                      "edited; download the Gemma folder again") from exc  # fmt: skip
            if not isinstance(doc, dict) or (name == "tokenizer.json" and not isinstance(doc.get("model"), dict)):
                raise CheckpointError(f"{path} is not a tokenizer file (no tokenizer model in it): download the "
                                      "Gemma folder again")  # fmt: skip


def inspect_gemma_folder(root: str | Path) -> GemmaInfo:
    """Check a Gemma 3 folder (config, tokenizer, language-model tensors) by headers only."""
    from transformers import Gemma3Config

    root = Path(root)
    hint = "pass the Gemma 3 12B folder (config.json, tokenizer.model, model-*.safetensors)"
    if not root.is_dir():
        raise CheckpointError(f"Gemma folder {root} does not exist or is not a folder: {hint}")
    config_path = root / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"Gemma folder {root} has no config.json: {hint}")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path} is not readable JSON ({exc})") from exc
    if not isinstance(config, dict) or "text_config" not in config:
        raise CheckpointError(f"{config_path} is not a Gemma 3 (Gemma3ForConditionalGeneration) config: {hint}")
    _check_gemma_config(config_path, config, hint)
    tokenizer = _find(root, "tokenizer.model") or _find(root, "tokenizer.json")
    if tokenizer is None:
        raise CheckpointError(f"Gemma folder {root} has no tokenizer.model or tokenizer.json: {hint}")
    check_tokenizer_files(tokenizer.parent)
    first = _find(root, "model*.safetensors")
    if first is None:
        raise CheckpointError(f"Gemma folder {root} has no model*.safetensors weights: {hint}")
    # ltx-core loads every .safetensors under the weights' folder; check exactly that set.
    shards = tuple(sorted(first.parent.rglob("*.safetensors")))
    found: dict[str, TensorInfo] = {}
    for shard in shards:
        found.update(read_header(shard).tensors)
    try:
        layout = gemma_layout(config)
        text_config = Gemma3Config.from_dict(copy.deepcopy(config)).text_config.to_dict()
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"{config_path} is not a usable Gemma 3 config ({exc!r})") from exc
    language = {k: v for k, v in layout.items() if k.startswith("language_model.")}
    _check_tensors(root, language, found, "the Gemma 3 language model")
    has_vision = all(name in found for name in layout if not name.startswith("language_model."))
    return GemmaInfo(root, config, text_config, shards, tokenizer.parent, has_vision)


def check_text_encoder_fits(checkpoint: CheckpointInfo, gemma: GemmaInfo) -> None:
    """Raise unless the checkpoint's feature extractor takes this Gemma's hidden states (all layers + embedding)."""
    text = gemma.text_config
    width = text["hidden_size"] * (text["num_hidden_layers"] + 1)
    actual = checkpoint.header.tensors[_FEATURE_EXTRACTOR].shape[1]
    if actual != width:
        raise CheckpointError(
            f"{checkpoint.path}: {_FEATURE_EXTRACTOR} takes {actual} features but the Gemma in {gemma.root} "
            f"gives {width} ({text['hidden_size']} x {text['num_hidden_layers'] + 1} layers): "
            "pair the checkpoint with the Gemma it was made for"
        )
