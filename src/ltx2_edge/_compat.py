"""Makes ``ltx_core`` importable without torchaudio, and says so loudly if it is ever needed.

ltx-core 1.0.0 imports torchaudio at module level, but uses it only in ``AudioProcessor`` (waveform -> mel,
for audio *encoding*: audio-to-video). Text-to-video+audio never touches it. PyPI's torchaudio wheels pin
one CUDA torch build each, so on a CPU machine with torch 2.13 no torchaudio loads at all.

Our choice (documented in the README): torchaudio is not a dependency. When it is absent, a placeholder
module stands in; touching any attribute of it raises an error that says what to install. When it is
installed but broken (a build for another torch), the import error is re-raised with that explanation.
This module must be imported before anything from ``ltx_core``; it never changes numerical behaviour.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

_MISSING_MSG = (
    "torchaudio is not installed: ltx2-edge does not need it for text-to-video+audio, but this feature "
    "(audio encoding, ltx_core AudioProcessor) does. Install the torchaudio build that matches your torch "
    "({torch}) and run again."
)


class _MissingTorchaudio(types.ModuleType):
    """Placeholder for torchaudio: importable, but any use raises a clear ImportError."""

    def __getattr__(self, name: str) -> object:
        if name.startswith("__") or name.startswith("_is_"):
            raise AttributeError(name)
        import torch

        raise ImportError(_MISSING_MSG.format(torch=torch.__version__) + f" (asked for torchaudio.{name})")


def ensure_torchaudio_importable() -> str:
    """Make ``import torchaudio`` succeed for ltx_core. Returns "installed" or "placeholder"."""
    existing = sys.modules.get("torchaudio")
    if existing is not None:
        return "placeholder" if isinstance(existing, _MissingTorchaudio) else "installed"
    if importlib.util.find_spec("torchaudio") is None:
        placeholder = _MissingTorchaudio("torchaudio")
        # A spec without a loader: libraries probing with find_spec() see a module, and their version probe
        # (importlib.metadata) finds no distribution, so they treat torchaudio as unavailable.
        placeholder.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules["torchaudio"] = placeholder
        return "placeholder"
    try:
        import torchaudio  # noqa: F401
    except (OSError, ImportError) as exc:
        import torch

        raise ImportError(
            f"torchaudio is installed but does not load beside torch {torch.__version__} ({exc}). "
            "ltx2-edge does not need torchaudio for text-to-video: `pip uninstall torchaudio`, "
            "or install the torchaudio build made for this torch."
        ) from exc
    return "installed"


TORCHAUDIO_STATUS = ensure_torchaudio_importable()
