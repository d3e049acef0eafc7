"""``scripts/torch_arch.py``, Jetson Thor's install check: which torch builds can run on sm_110, read from an arch list
or from a wheel's ``libtorch_cuda.so`` without installing it, and the plain message when none fits."""

from __future__ import annotations

import importlib.util
import platform
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("torch_arch", ROOT / "scripts" / "torch_arch.py")
torch_arch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(torch_arch)

CU130 = ["sm_80", "sm_90", "sm_100", "sm_110", "sm_120"]
CU128 = ["sm_80", "sm_90", "sm_100", "sm_120"]  # torch 2.9.1+cu128's list: no sm_110, no PTX


@pytest.mark.parametrize(
    ("archs", "ok", "says"),
    [
        (CU130, True, "sm_110 kernels present"),
        (CU128, False, "no sm_110 kernels and no PTX to JIT them from (has sm_80, sm_90, sm_100, sm_120)"),
        ([*CU128, "compute_100"], True, "PTX for compute_100: kernels JIT-compile on first use"),
        ([*CU128, "compute_120"], False, "no sm_110 kernels"),  # PTX only runs on its own or a later arch
        ([], False, "has none"),
    ],
)
def test_which_arch_lists_run_on_thor(archs, ok, says):
    fits, detail = torch_arch.fits(archs, "sm_110")
    assert fits is ok and says in detail


def _fake_wheel(path: Path, archs: list[str]) -> Path:
    flags = ";".join(f"-gencode;arch=compute_{a[3:]},code={a}" for a in archs).encode()
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("torch/lib/libtorch_cuda.so", b"\x7fELF" + b"\0" * 1000 + flags + b"\0" * 1000)
        wheel.writestr("torch/__init__.py", "")
    return path


def test_a_wheels_arch_list_is_read_without_installing_it(tmp_path, capsys):
    thor = _fake_wheel(tmp_path / "torch-2.13.0-cp312-cp312-manylinux_2_28_aarch64.whl", CU130)
    assert torch_arch.wheel_archs(thor) == CU130
    assert torch_arch.main(["--wheel", str(thor), "--require", "sm_110"]) == 0
    assert "sm_110 kernels present" in capsys.readouterr().out
    old = _fake_wheel(tmp_path / "torch-2.9.1+cu128-cp312-cp312-manylinux_2_28_aarch64.whl", CU128)
    assert torch_arch.main(["--wheel", str(old), "--require", "sm_110"]) == 1
    err = capsys.readouterr().err
    assert "no kernel image is available for execution on the device" in err
    assert "pip install --force-reinstall 'torch>=2.11,<2.14'" in err and "container" in err
    cpu_only = tmp_path / "cpu.whl"
    with zipfile.ZipFile(cpu_only, "w") as wheel:
        wheel.writestr("torch/__init__.py", "")
    assert torch_arch.wheel_archs(cpu_only) == []


def test_the_installed_cpu_torch_has_no_kernels_for_thor(capsys):
    assert torch_arch.main(["--require", "sm_110"]) == (0 if "sm_110" in torch_arch.installed_archs()[1] else 1)
    if platform.machine() != "aarch64":
        assert torch_arch.is_jetson() == (False, f"{platform.machine()}, not aarch64")
        assert torch_arch.main(["--is-jetson"]) == 1
