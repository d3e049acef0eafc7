"""Does this torch (or this torch wheel) carry kernels for this GPU? Jetson Thor's install check, used by setup.sh.

Jetson Thor is compute capability 11.0 (``sm_110``; it was ``sm_101`` before CUDA 13) and needs a CUDA 13 aarch64
torch with ``sm_110`` kernels; cu128/cu129 builds stop at sm_100/sm_120 with no PTX to JIT from, so every CUDA op
fails with "no kernel image is available for execution on the device".

    python scripts/torch_arch.py --is-jetson          exit 0 on an aarch64 NVIDIA Jetson (integrated GPU), else 1
    python scripts/torch_arch.py [--require sm_110]   check the installed torch (default: this GPU's arch, or
                                                      sm_110 on a Jetson); exit 0 when it fits, 1 with what to do
    python scripts/torch_arch.py --wheel FILE.whl     the same check on a wheel, read without installing it
    python scripts/torch_arch.py --triton             also compile one Triton kernel for this GPU (ptxas check)

Reads files and asks torch; it never installs, downloads or changes anything.
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
import zipfile
from pathlib import Path

THOR_ARCH = "sm_110"
# The build's nvcc flags are stored in libtorch_cuda.so: "-gencode;arch=compute_110,code=sm_110;...".
_GENCODE = re.compile(rb"arch=compute_(\d+[af]?),code=((?:sm|compute)_\d+[af]?)")
_CHUNK = 64 << 20
WHAT_TO_DO = (
    "On a Jetson Thor (JetPack 7.x, CUDA 13, Python 3.12) install a CUDA 13 aarch64 torch that lists sm_110:\n"
    "  .venv/bin/python -m pip install --force-reinstall 'torch>=2.11,<2.14'   (PyPI's aarch64 wheels are CUDA 13)\n"
    "then run `bash scripts/setup.sh` again. Where no such wheel fits (another JetPack, an older CUDA), use the\n"
    "container route: NVIDIA's PyTorch container for JetPack 7 (an NGC nvcr.io/nvidia/pytorch release whose notes\n"
    "list Jetson Thor, or jetson-containers' l4t-pytorch for your L4T release); create .venv inside it with\n"
    "`python3 -m venv --system-site-packages .venv` and run `bash scripts/setup.sh`, which keeps a torch it finds."
)


def is_jetson() -> tuple[bool, str]:
    """(aarch64 with an NVIDIA integrated GPU, why): /etc/nv_tegra_release, the device-tree model, or nvidia-smi."""
    if platform.machine() not in ("aarch64", "arm64"):
        return False, f"{platform.machine()}, not aarch64"
    release = Path("/etc/nv_tegra_release")
    if release.is_file():
        return True, f"{release}: {release.read_text(errors='replace').splitlines()[0][:80]}"
    model = Path("/proc/device-tree/model")
    if model.is_file():
        text = model.read_bytes().decode(errors="replace").strip("\x00").strip()
        if "nvidia" in text.lower() and ("jetson" in text.lower() or "thor" in text.lower()):
            return True, f"{model}: {text}"
    try:
        names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=20, check=False).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        names = ""
    if re.search(r"\b(thor|orin|jetson)\b", names, re.IGNORECASE):
        return True, f"nvidia-smi: {names.strip()}"
    return False, "aarch64 without /etc/nv_tegra_release, a Jetson device-tree model or a Jetson GPU"


def fits(archs: list[str], need: str) -> tuple[bool, str]:
    """Whether kernels for ``need`` (``sm_110``) are among ``archs``: its own SASS, or plain PTX (``compute_N``, no
    ``a``/``f`` suffix) of this or an older compute capability, which the driver can JIT (slow first run)."""
    if need in archs:
        return True, f"{need} kernels present"
    target = int(need.removeprefix("sm_"))
    ptx = [a for a in archs if re.fullmatch(r"compute_\d+", a) and int(a.removeprefix("compute_")) <= target]
    if ptx:
        return True, f"no {need} SASS, but PTX for {', '.join(ptx)}: kernels JIT-compile on first use"
    return False, f"no {need} kernels and no PTX to JIT them from (has {', '.join(archs) or 'none'})"


def wheel_archs(path: Path) -> list[str]:
    """The arch list of a torch wheel, from its libtorch_cuda.so build flags (read from the zip, not installed)."""
    found: set[str] = set()
    with zipfile.ZipFile(path) as wheel:
        libs = [n for n in wheel.namelist() if re.search(r"torch/lib/libtorch_cuda[^/]*\.so", n)]
        if not libs:
            return []
        with wheel.open(libs[0]) as lib:
            tail = b""
            while chunk := lib.read(_CHUNK):
                for _, code in _GENCODE.findall(tail + chunk):
                    found.add(code.decode())
                tail = chunk[-128:]
    return sorted(found, key=lambda a: (a.startswith("compute"), int(re.sub(r"\D", "", a))))


def installed_archs() -> tuple[str, list[str], str]:
    """(torch version, its CUDA arch list, CUDA version) of the torch this Python imports."""
    import torch

    flags = getattr(torch._C, "_cuda_getArchFlags", None)
    archs = (flags() or "").split() if flags is not None else []  # get_arch_list() is [] without a visible GPU
    return torch.__version__, archs, torch.version.cuda or ""


def device_arch() -> str | None:
    """``sm_XY`` of GPU 0 as this torch sees it, or None."""
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return f"sm_{major}{minor}"


def triton_check() -> tuple[bool, str]:
    """Compile and run one Triton kernel on GPU 0: Triton's bundled ptxas may not know the GPU (sm_110a)."""
    try:
        import torch
        import triton
        import triton.language as tl
    except ImportError:
        return True, "Triton is not installed: runs stay eager (CUDA graphs work; --compile on is refused)"

    @triton.jit
    def _add_one(x_ptr, n, BLOCK: tl.constexpr):  # noqa: ANN001
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) + 1, mask=offs < n)

    x = torch.zeros(64, device="cuda")
    try:
        _add_one[(1,)](x, 64, BLOCK=64)
        torch.cuda.synchronize()
    except Exception as exc:  # PTXASError and friends: the message below says what to do
        line = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
        return False, (
            f"Triton {triton.__version__} cannot compile for this GPU ({line}). Point Triton at CUDA 13's ptxas: "
            "export TRITON_PTXAS_PATH=/usr/local/cuda/bin/ptxas TRITON_PTXAS_BLACKWELL_PATH=/usr/local/cuda/bin/ptxas "
            "TRITON_PTXAS_THOR_PATH=/usr/local/cuda/bin/ptxas (pytorch#170117), or run without Triton: "
            "`.venv/bin/python -m pip uninstall -y triton` and --compile off"
        )
    return bool(x.eq(1).all()), f"Triton {triton.__version__} compiled and ran a kernel on this GPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--is-jetson", action="store_true", help="exit 0 on an aarch64 NVIDIA Jetson, 1 otherwise")
    parser.add_argument("--require", default=None, help="the arch the torch must carry (default: this GPU's)")
    parser.add_argument("--wheel", type=Path, default=None, help="check this torch wheel instead of the installed one")
    parser.add_argument("--triton", action="store_true", help="also compile one Triton kernel on GPU 0")
    args = parser.parse_args(argv)
    jetson, why = is_jetson()
    if args.is_jetson:
        print(f"jetson: {'yes' if jetson else 'no'} ({why})")
        return 0 if jetson else 1
    if args.wheel is not None:
        name, archs, cuda = args.wheel.name, wheel_archs(args.wheel), ""
    else:
        version, archs, cuda = installed_archs()
        name = f"torch {version}" + (f" (CUDA {cuda})" if cuda else " (no CUDA)")
    need = args.require or (device_arch() if args.wheel is None else None) or (THOR_ARCH if jetson else None)
    if need is None:
        print(f"{name}: {', '.join(archs) or 'no CUDA kernels'}; no GPU here and no --require: nothing to check")
        return 0
    ok, detail = fits(archs, need)
    print(f"{name}: kernels for {', '.join(archs) or 'no GPU'}; {detail}")
    if not ok:
        where = "this Jetson" if jetson else ("this GPU" if need == device_arch() else "the device asked for")
        print(f"torch_arch: {name} cannot run on {need} ({where}): every CUDA op would fail with 'no kernel image "
              f"is available for execution on the device'.\n{WHAT_TO_DO}", file=sys.stderr)  # fmt: skip
        return 1
    if args.triton and device_arch() is not None:
        triton_ok, triton_detail = triton_check()
        print(triton_detail, file=sys.stdout if triton_ok else sys.stderr)
        return 0 if triton_ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
