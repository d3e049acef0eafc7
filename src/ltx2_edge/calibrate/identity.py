"""What this process runs on, as the profile files record it: the device, its capability, torch, CUDA, the driver.

NVML gives the driver version and the device memory this process uses: through ``pynvml`` (nvidia-ml-py) when it
is installed, else through ``nvidia-smi``; without either those facts are "" or None and the callers say "not
measured". This module only asks; it never allocates device memory and never measures a rate.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from typing import Any

import torch

from ltx2_edge.calibrate.choice import DeviceIdentity, cpu_identity


def _nvml() -> Any | None:
    try:
        import pynvml  # nvidia-ml-py: present beside CUDA torch on the GPU boxes; optional

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # not installed, no driver, or not permitted: callers say "not measured"
        return None


def _smi(*query: str) -> list[list[str]] | None:
    """Rows of ``nvidia-smi --query-...=... --format=csv,noheader,nounits``, or None without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, *query, "--format=csv,noheader,nounits"], capture_output=True, text=True,
                              timeout=15, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return [[cell.strip() for cell in line.split(",")] for line in done.stdout.splitlines() if line.strip()]


def driver_version() -> str:
    """The NVIDIA driver's version (``580.159.04``), or the CUDA driver API version torch reports, or ""."""
    nvml = _nvml()
    if nvml is not None:
        try:
            version = nvml.nvmlSystemGetDriverVersion()
            return version.decode() if isinstance(version, bytes) else str(version)
        except Exception:  # an NVML without this call: fall through to nvidia-smi
            pass
    rows = _smi("--query-gpu=driver_version")
    if rows and rows[0] and rows[0][0]:
        return rows[0][0]
    if torch.cuda.is_available():
        try:
            api = int(torch._C._cuda_getDriverVersion())  # e.g. 13000: the CUDA version the driver supports
            return f"cuda-driver-api {api // 1000}.{api % 1000 // 10}"
        except Exception:  # an older torch without the call
            return ""
    return ""


def device_identity(device: torch.device) -> DeviceIdentity:
    """The ``DeviceIdentity`` of ``device`` (a CUDA GPU, or this machine's CPU)."""
    if device.type != "cuda":
        return cpu_identity(torch.__version__)
    props = torch.cuda.get_device_properties(device)
    return DeviceIdentity(props.name, f"{props.major}.{props.minor}", bool(getattr(props, "is_integrated", False)),
                          "cuda", torch.__version__, driver_version())  # fmt: skip


def nvml_index(device: torch.device) -> int:
    """NVML's index of ``device`` (CUDA_VISIBLE_DEVICES renumbers torch's devices, NVML's not)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    if visible and visible[0] and index < len(visible) and visible[index].strip().isdigit():
        return int(visible[index])
    return index


def nvml_used_bytes(device: torch.device) -> tuple[int | None, int | None]:
    """``(bytes this process holds on the device, bytes the whole device has in use)`` as NVML sees them; None
    where NVML cannot tell (not installed; another PID namespace hides this process; an integrated GPU)."""
    if device.type != "cuda":
        return None, None
    nvml = _nvml()
    if nvml is None:
        return _smi_used_bytes(nvml_index(device))
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(nvml_index(device))
        total_used = int(nvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:  # integrated GPUs and some drivers do not report memory through NVML
        return None, None
    mine = None
    try:
        for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                mine = int(proc.usedGpuMemory)
    except Exception:  # per-process accounting not permitted here: the caller uses the device-wide figure
        mine = None
    return mine, total_used


def _smi_used_bytes(index: int) -> tuple[int | None, int | None]:
    mib = 1 << 20
    rows = _smi(f"--id={index}", "--query-gpu=memory.used")
    if not rows or not rows[0][0].isdigit():  # "[N/A]" on integrated GPUs
        return None, None
    total = int(rows[0][0]) * mib
    apps = _smi(f"--id={index}", "--query-compute-apps=pid,used_memory") or []
    mine = [int(r[1]) * mib for r in apps if len(r) == 2 and r[0] == str(os.getpid()) and r[1].isdigit()]
    return (mine[0] if mine else None), total


def software() -> dict[str, str]:
    """torch, CUDA, cuDNN, the driver, Python, ltx2-edge and the OS, as strings ("" where absent)."""
    from ltx2_edge import __version__

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
        "cudnn": str(cudnn or ""),
        "driver": driver_version(),
        "python": sys.version.split()[0],
        "ltx2_edge": __version__,
        "platform": platform.platform(),
    }
