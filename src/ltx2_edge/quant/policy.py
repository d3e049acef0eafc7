"""Which Linear layers run in 8 bits and which stay BF16: the policy is data, decided once, here.

A ``QuantPolicy`` is a precision plus two lists of patterns over dotted module names: ``quantize`` (the
candidate families: Linear layers inside the 48 transformer blocks and the Gemma language-model layers) and
``keep_bf16`` (exceptions kept in BF16: the audio<->video cross-attention where A/V sync lives, every
adaLN/timestep modulation, the patchify/proj_out projections, caption projections, norms, embeddings).
The same policy object decides module swapping (``apply.py``) and checkpoint conversion (``convert.py``), so
they cannot drift, and it is recorded in every converted file.

Pattern syntax: an fnmatch-style glob (``*`` any characters, dots included; ``?`` one character other than a
dot; ``[...]`` a character set, ``[!...]`` its complement) that must cover a whole run of consecutive dotted
components of the name. So ``attn1`` matches ``transformer_blocks.3.attn1.to_q`` but not
``transformer_blocks.3.audio_attn1.to_q``; ``transformer_blocks.4[3-7]`` matches blocks 43-47 only;
``*adaln*`` matches any name containing "adaln". Because a match may start at any component, one pattern
works on model module names and on checkpoint tensor names (which add a ``model.diffusion_model.`` prefix).

This module never touches weights, never imports torch (the planner reads the same keep-list) and never silently
changes a requested precision; what a device can run is ``precision.py``'s.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, replace

from ltx2_edge.errors import RequestError

PRECISIONS: tuple[str, ...] = ("fp8", "int8", "bf16")
REQUESTABLE: tuple[str, ...] = ("auto", *PRECISIONS)

DEFAULT_QUANTIZE: tuple[str, ...] = (
    "transformer_blocks.*",  # LTXModel's 48 BasicAVTransformerBlocks (not the connectors' transformer_1d_blocks)
    "language_model.layers.*",  # Gemma 3 as transformers >= 4.52 names it
    "language_model.model.layers.*",  # Gemma 3 as the official release files name it
)
DEFAULT_KEEP_BF16: tuple[str, ...] = (
    "audio_to_video_attn",  # A/V cross-attention: where audio-video sync lives
    "video_to_audio_attn",
    "*scale_shift_table*",  # adaLN tables, including scale_shift_table_a2v_ca_*
    "*adaln*",  # adaln_single, audio_adaln_single, av_ca_*_adaln_single
    "*timestep*",
    "av_ca_*",
    "patchify_proj",
    "audio_patchify_proj",
    "proj_out",
    "audio_proj_out",
    "*caption_projection*",
    "*norm*",
    "*embed*",
)
# Lightricks' own FP8 choice (ltx-core's EXCLUDED_LAYER_SUBSTRINGS): also the first block and the last five.
LIGHTRICKS_KEEP_BF16: tuple[str, ...] = (*DEFAULT_KEEP_BF16, "transformer_blocks.0", "transformer_blocks.4[3-7]")

_PATTERN_CHARS = re.compile(r"^[A-Za-z0-9_.*?\[\]!-]+$")
_PATTERN_HELP = "a glob over dotted module names, e.g. 'attn1', 'ff', 'transformer_blocks.4[3-7]' or '*adaln*'"


@functools.lru_cache(maxsize=512)
def _compile(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        end = pattern.find("]", i + 1)
        if c == "*":
            parts.append(".*")
        elif c == "?":
            parts.append(r"[^.]")
        elif c == "[" and end > i + 1:
            body = pattern[i + 1 : end]
            parts.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end
        else:
            parts.append(re.escape(c))
        i += 1
    return re.compile(r"(?:^|\.)(?:" + "".join(parts) + r")(?:\.|$)")


def pattern_matches(pattern: str, name: str) -> bool:
    """Whether ``pattern`` covers a run of consecutive dotted components of ``name`` (see the module docstring)."""
    return _compile(pattern).search(name) is not None


def _check_patterns(field_name: str, patterns: tuple[str, ...]) -> None:
    for p in patterns:
        if not isinstance(p, str) or not _PATTERN_CHARS.match(p) or p.startswith(".") or p.endswith("."):
            raise RequestError(field_name, p, _PATTERN_HELP)
        try:
            _compile(p)
        except re.error as exc:
            raise RequestError(field_name, p, f"{_PATTERN_HELP} ({exc})") from exc


@dataclass(frozen=True)
class QuantPolicy:
    """Precision plus the patterns that pick the 8-bit Linear layers; see the module docstring for the syntax."""

    precision: str
    keep_bf16: tuple[str, ...] = DEFAULT_KEEP_BF16
    quantize: tuple[str, ...] = DEFAULT_QUANTIZE

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise RequestError("precision", self.precision, f"one of {', '.join(PRECISIONS)}")
        # Lists (from JSON, argparse) become tuples so the policy stays hashable and immutable.
        object.__setattr__(self, "keep_bf16", tuple(self.keep_bf16))
        object.__setattr__(self, "quantize", tuple(self.quantize))
        _check_patterns("keep_bf16", self.keep_bf16)
        _check_patterns("quantize", self.quantize)

    @classmethod
    def from_flags(cls, precision: str, keep_bf16: tuple[str, ...] = (), quantize_all: bool = False) -> QuantPolicy:
        """The CLI's policy: defaults, ``--quantize-all`` empties the keep-list, ``--keep-bf16`` adds patterns."""
        base = () if quantize_all else DEFAULT_KEEP_BF16
        return cls(precision, keep_bf16=base + tuple(p for p in keep_bf16 if p not in base))

    def with_precision(self, precision: str) -> QuantPolicy:
        """The same patterns at another precision (after ``resolve_precision``)."""
        return replace(self, precision=precision)

    def keep_reason(self, name: str) -> str | None:
        """Why the Linear ``name`` stays BF16 ("not a candidate", "kept: <pattern>", "bf16 run"), None if quantized."""
        if not any(pattern_matches(p, name) for p in self.quantize):
            return "not a candidate"
        for p in self.keep_bf16:
            if pattern_matches(p, name):
                return f"kept: {p}"
        return "bf16 run" if self.precision == "bf16" else None

    def precision_for(self, name: str) -> str:
        """ "fp8"/"int8" if the Linear ``name`` (module name, or tensor name minus ".weight") is 8-bit, else "bf16"."""
        return "bf16" if self.keep_reason(name) is not None else self.precision

    def summary(self) -> str:
        """One line: precision and the keep-list relative to the default (used in mismatch errors)."""
        extra = [p for p in self.keep_bf16 if p not in DEFAULT_KEEP_BF16]
        missing = [p for p in DEFAULT_KEEP_BF16 if p not in self.keep_bf16]
        if not self.keep_bf16:
            keep = "keep-list empty (--quantize-all)"
        elif missing:
            keep = f"keep_bf16={list(self.keep_bf16)}"
        else:
            keep = "default keep-list" + (f" + {extra}" if extra else "")
        families = "" if self.quantize == DEFAULT_QUANTIZE else f", quantize={list(self.quantize)}"
        return f"{self.precision}, {keep}{families}"

    def describe(self) -> list[str]:
        """Lines for the plan and the report."""
        if self.precision == "bf16":
            return ["precision: bf16 (no layer quantized)"]
        weights = "float8_e4m3fn" if self.precision == "fp8" else "int8"
        lines = [
            f"precision: {self.precision} (weights {weights} with per-output-channel fp32 scales; "
            "activations quantized per token at run time)",
            f"8-bit candidates: Linear layers matching {', '.join(self.quantize)}",
        ]
        if self.keep_bf16:
            lines.append(f"kept in BF16 ({len(self.keep_bf16)} patterns): {', '.join(self.keep_bf16)}")
        else:
            lines.append("kept in BF16: nothing among the candidates (--quantize-all; for experiments)")
        return lines

    def to_json(self) -> str:
        """What a converted file records under metadata ``ltx2_edge_quantization``."""
        doc = {"format": 1, "precision": self.precision, "keep_bf16": list(self.keep_bf16)}
        doc.update(quantize=list(self.quantize), scales="per-output-channel fp32")
        return json.dumps(doc, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> QuantPolicy:
        """Inverse of ``to_json``. ``ValueError``/``RequestError`` if the text is not such a record."""
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != 1:
            raise ValueError(f"not an ltx2-edge quantization record (format 1): {text[:80]!r}")
        return cls(doc["precision"], keep_bf16=tuple(doc["keep_bf16"]), quantize=tuple(doc["quantize"]))


DEFAULT_FP8_POLICY = QuantPolicy("fp8")
DEFAULT_INT8_POLICY = QuantPolicy("int8")
LIGHTRICKS_FP8_POLICY = QuantPolicy("fp8", keep_bf16=LIGHTRICKS_KEEP_BF16)
