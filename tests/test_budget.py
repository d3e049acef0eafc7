"""Budget sizes and the one-pool / discrete rules (pure, no device)."""

from __future__ import annotations

import pytest

from ltx2_edge.errors import RequestError
from ltx2_edge.plan.budget import DEFAULT_BUDGET_BYTES, Budget, GiB, default_host_budget, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("32GiB", 32 * GiB),
        ("24GB", 24 * 10**9),
        ("16g", 16 * GiB),
        ("1.5TiB", 3 * 1024 * GiB // 2),
        ("512 MiB", 512 * 1024**2),
        ("1073741824", GiB),
        ("none", None),
        ("None", None),
    ],
)
def test_parse_size_accepts(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "12XB", "", "0GiB", "GiB", "1.2.3g", "9" * 400, "8EiB", "1e400"])
def test_parse_size_refuses_with_the_field_name(text):
    with pytest.raises(RequestError) as err:
        parse_size(text, field="host-budget")
    assert err.value.field == "--host-budget"
    assert err.value.value == text
    assert err.value.allowed == "a positive size below 8 EiB such as 32GiB, 24GB or none"
    assert str(err.value).startswith("--host-budget=") and "\n" not in str(err.value)


def test_default_budget_is_32_gib():
    assert DEFAULT_BUDGET_BYTES == 32 * GiB
    assert Budget.for_device(is_integrated=True).device_bytes == 32 * GiB


def test_integrated_gpu_is_one_pool_and_refuses_a_host_budget():
    b = Budget.for_device(24 * GiB, is_integrated=True)
    assert (b.device_bytes, b.host_bytes, b.unified) == (24 * GiB, None, True)
    assert "one pool" in b.describe() and "page cache" in b.describe()
    with pytest.raises(RequestError) as err:
        Budget.for_device(24 * GiB, is_integrated=True, host_budget=8 * GiB)
    assert err.value.field == "--host-budget"


def test_unified_flag_applies_the_one_pool_rule_on_a_discrete_gpu():
    b = Budget.for_device(32 * GiB, is_integrated=False, unified=True, host_available_bytes=200 * GiB)
    assert b.unified and b.host_bytes is None


def test_discrete_host_budget_defaults_to_available_minus_margin():
    # 10 % of 20 GiB = 2 GiB < 4 GiB cap; 10 % of 100 GiB = 10 GiB is capped at 4 GiB.
    assert default_host_budget(20 * GiB) == 18 * GiB
    assert default_host_budget(100 * GiB) == 96 * GiB
    b = Budget.for_device(16 * GiB, is_integrated=False, host_available_bytes=100 * GiB)
    assert (b.device_bytes, b.host_bytes, b.unified) == (16 * GiB, 96 * GiB, False)
    assert "host 96.0 GiB" in b.describe() and "device 16.0 GiB" in b.describe()


def test_discrete_explicit_and_unlimited_host_budget():
    b = Budget.for_device(None, is_integrated=False, host_budget=8 * GiB)
    assert (b.device_bytes, b.host_bytes) == (None, 8 * GiB)
    assert Budget.for_device(16 * GiB, is_integrated=False, host_budget=None).host_bytes is None
    with pytest.raises(RequestError):
        Budget.for_device(16 * GiB, is_integrated=False)  # "auto" needs the OS figure
