"""The CUDA allocator choice (memory/allocator.py): pure resolution, the user's environment respected, bad values
refused before any weight is read."""

import pytest
import torch

from ltx2_edge import cli
from ltx2_edge.engine.settings import RunSettings
from ltx2_edge.errors import RequestError
from ltx2_edge.memory import allocator
from ltx2_edge.memory.allocator import resolve_allocator, user_alloc_conf
from ltx2_edge.pipeline import Generator


@pytest.mark.parametrize(
    ("mode", "cuda", "integrated", "user", "kind"),
    [
        ("auto", True, False, None, "expandable"),  # discrete GPU: reserved follows allocated
        ("auto", True, True, None, "caching"),  # Jetson: unproven there, the default stays
        ("auto", True, False, ("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128"), "user"),
        ("expandable", True, True, None, "expandable"),  # asked for explicitly: done, even on a Jetson
        ("expandable", True, False, ("PYTORCH_ALLOC_CONF", "x"), "expandable"),
        ("caching", True, False, None, "caching"),
        ("auto", False, False, None, "none"),
        ("caching", False, False, None, "none"),
    ],
)
def test_resolve_allocator(mode, cuda, integrated, user, kind):
    got, why = resolve_allocator(mode, cuda=cuda, integrated=integrated, user_conf=user)
    assert got == kind
    if kind == "user":
        assert "PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:128" in why


def test_bad_mode_is_named():
    with pytest.raises(ValueError, match="cuda_allocator='fast'.*auto, expandable, caching"):
        resolve_allocator("fast", cuda=True, integrated=False, user_conf=None)


def test_user_conf_reads_either_variable():
    assert user_alloc_conf({}) is None
    assert user_alloc_conf({"PYTORCH_CUDA_ALLOC_CONF": "  "}) is None
    assert user_alloc_conf({"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:False"}) == (
        "PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:False")  # fmt: skip
    both = {"PYTORCH_ALLOC_CONF": "a:1", "PYTORCH_CUDA_ALLOC_CONF": "b:2"}
    assert user_alloc_conf(both) == ("PYTORCH_ALLOC_CONF", "a:1")  # the newer name wins, as in PyTorch


def test_configure_on_cpu_touches_nothing(monkeypatch):
    def boom(_settings: str) -> None:
        raise AssertionError("the CUDA allocator was configured on a CPU run")

    monkeypatch.setattr(torch.cuda.memory, "_set_allocator_settings", boom)
    assert allocator.configure_allocator("expandable", torch.device("cpu"), False)[0] == "none"


def test_configure_applies_the_choice(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(torch.cuda.memory, "_set_allocator_settings", seen.append)
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    assert allocator.configure_allocator("auto", torch.device("cuda"), False)[0] == "expandable"
    assert allocator.configure_allocator("caching", torch.device("cuda"), False)[0] == "caching"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "garbage_collection_threshold:0.6")
    assert allocator.configure_allocator("auto", torch.device("cuda"), False)[0] == "user"
    assert seen == ["expandable_segments:True", "expandable_segments:False"]  # the user's setting left alone


def test_generator_refuses_a_bad_allocator_before_weights(tiny_dir):
    with pytest.raises(RequestError, match="cuda-allocator.*auto, expandable, caching"):
        Generator(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", RunSettings(cuda_allocator="turbo"))


def test_cli_refuses_a_bad_allocator(tiny_dir, tmp_path, capsys):
    args = ["generate", "--prompt", "x", "--checkpoint-path", str(tiny_dir / "ltx2.safetensors"),
            "--gemma-root", str(tiny_dir / "gemma"), "--output-path", str(tmp_path / "o.mp4"),
            "--cuda-allocator", "turbo"]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "--cuda-allocator" in err and "expandable" in err and "\n" not in err
    assert not list(tmp_path.iterdir())
