"""Progress lines on stderr: stage starts/ends and denoising steps with an ETA. Never touches stdout."""

from __future__ import annotations

import sys
from typing import TextIO


class Progress:
    """Prints one line per event; ``quiet`` silences it (the report table still prints)."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def stage(self, name: str, detail: str = "") -> None:
        """A stage starts."""
        self._say(f"[{name}] {detail}".rstrip())

    def done(self, name: str, seconds: float) -> None:
        """A stage ended."""
        self._say(f"[{name}] done in {seconds:.2f} s")

    def step(self, index: int, total: int, seconds: float, elapsed: float, stage: str = "denoise") -> None:
        """Denoising step ``index`` (0-based) of ``total`` took ``seconds``; ETA from the mean so far."""
        done = index + 1
        eta = elapsed / done * (total - done)
        self._say(f"[{stage}] step {done}/{total}  {seconds:.2f} s/step  ETA {eta:.1f} s")

    def note(self, text: str) -> None:
        """Anything the user must know (what runs instead of what was asked, and why)."""
        self._say(f"note: {text}")
