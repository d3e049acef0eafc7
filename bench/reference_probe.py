"""How bench/reference.py measures one run from outside: a fresh process, its peak host memory, NVML's device memory.

Peak host memory comes from the kernel (``wait4``'s ru_maxrss) and from /proc status samples every 50 ms
(RssAnon / RssShmem / RssFile); device memory from NVML samples with the idle baseline subtracted. This module
never creates a CUDA context (NVML only) and kills only the process group it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


class Sampler:
    """Polls a process's /proc status and the GPU's NVML memory every 50 ms; peaks only (no CUDA context here)."""

    def __init__(self, pid: int, nvml: Any) -> None:
        self.pid, self.nvml, self.peaks = pid, nvml, {"RssAnon": 0, "RssShmem": 0, "RssFile": 0, "nvml": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key in self.peaks:
                        self.peaks[key] = max(self.peaks[key], int(value.split()[0]) * 1024)
            except (FileNotFoundError, ProcessLookupError, ValueError):  # the process is exiting
                pass
            if self.nvml is not None:
                self.peaks["nvml"] = max(self.peaks["nvml"], self.nvml())

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        return self.peaks


def nvml_reader() -> tuple[Any, str]:
    """(a function returning GPU 0's used bytes, the GPU's name), or (None, "cpu") where NVML is unavailable."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
    except Exception:  # no NVIDIA driver or no pynvml: a CPU machine, and the records say "cpu"
        return None, "cpu"
    return (lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)), name if isinstance(name, str) else name.decode()


def execute(argv: list[str], env: dict[str, str], log: Path, timeout: float, nvml: Any) -> dict[str, Any]:
    """Run one process to completion (or kill its group at ``timeout``); its output appended to ``log``."""
    baseline = nvml() if nvml is not None else 0
    start = time.perf_counter()
    with log.open("a") as out:
        proc = subprocess.Popen([sys.executable, *argv], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, **env})  # fmt: skip
        sampler = Sampler(proc.pid, nvml)

        def kill() -> None:  # the process group this call started, and nothing else
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended just now
                pass

        timer = threading.Timer(max(timeout, 1.0), kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)  # rusage of this child alone: its own peak RSS
        proc.returncode = os.waitstatus_to_exitcode(status)
        killed = not timer.is_alive() and proc.returncode == -signal.SIGKILL
        timer.cancel()
    peaks = sampler.stop()
    return {"rc": proc.returncode, "wall_seconds": time.perf_counter() - start, "killed_at_deadline": killed,
            "peak_host_rss_bytes": usage.ru_maxrss * 1024, "peak_host_anon_bytes": peaks["RssAnon"],
            "peak_host_shmem_bytes": peaks["RssShmem"], "peak_host_file_bytes": peaks["RssFile"],
            "peak_nvml_bytes": peaks["nvml"] - baseline if nvml is not None else None}  # fmt: skip
