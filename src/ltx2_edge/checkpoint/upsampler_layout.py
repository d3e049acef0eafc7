"""What a latent upsampler file holds, derived from its ``config`` metadata by ltx-core's own builder.

The official upsampler file (``ltx-2-spatial-upscaler-x2-1.0.safetensors``) stores ``LatentUpsampler``'s state
dict under the module's own names (ltx-pipelines loads it with no key mapping) and its constructor arguments as
JSON under the metadata key ``"config"``. So the layout is never written by hand: ``LatentUpsamplerConfigurator``
builds the module on the ``meta`` device and every parameter and persistent buffer becomes one file tensor,
with the init role ``init_scheme`` knows for it. The one buffer, the rational resampler's binomial blur kernel,
is not random: its values come from ltx-core's ``BlurDownsample`` itself (role ``"fixed"``).
This module never reads or writes a file and never allocates weight memory beyond that 5x5 kernel.
"""

from __future__ import annotations

import torch

import ltx2_edge  # noqa: F401  (installs the torchaudio placeholder before ltx_core loads)
from ltx2_edge.checkpoint.layout import Shape

# Role of a tensor whose values the model defines (the generator writes them as given, never drawn).
FIXED_ROLE = "fixed"


def build_upsampler_meta(config: dict) -> torch.nn.Module:
    """ltx-core's ``LatentUpsampler`` for ``config`` on the meta device (raises what ltx-core raises)."""
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator

    with torch.device("meta"):
        return LatentUpsamplerConfigurator.from_config(config)


def resolved_config(model: torch.nn.Module) -> dict:
    """The constructor arguments ``model`` was built with: the file's config with ltx-core's defaults filled in."""
    return {
        "in_channels": model.in_channels,
        "mid_channels": model.mid_channels,
        "num_blocks_per_stage": model.num_blocks_per_stage,
        "dims": model.dims,
        "spatial_upsample": model.spatial_upsample,
        "temporal_upsample": model.temporal_upsample,
        "spatial_scale": model.spatial_scale,
        "rational_resampler": model.rational_resampler,
    }


def spatial_factor(model: torch.nn.Module) -> float:
    """How much ``model`` scales height and width: what its forward really does, whatever ``spatial_scale`` says.

    Only the rational resampler reads ``spatial_scale``; the pixel-shuffle upsamplers always double H and W
    (spatial) or leave them alone (temporal only).
    """
    from ltx_core.model.upsampler.spatial_rational_resampler import SpatialRationalResampler

    if isinstance(model.upsampler, SpatialRationalResampler):
        return model.upsampler.num / model.upsampler.den
    return 2.0 if model.spatial_upsample else 1.0


def _role(module: torch.nn.Module, attr: str) -> str:
    if isinstance(module, torch.nn.GroupNorm):
        return "norm_weight" if attr == "weight" else "norm_bias"
    if isinstance(module, torch.nn.modules.conv._ConvNd):
        return attr  # "weight" or "bias": kaiming-uniform with the conv's fan-in
    from ltx_core.model.upsampler.blur_downsample import BlurDownsample

    if isinstance(module, BlurDownsample) and attr == "kernel":
        return FIXED_ROLE
    raise RuntimeError(f"{type(module).__name__}.{attr} has no init role: ltx-core changed, update upsampler_layout")


def upsampler_layout(config: dict) -> dict[str, tuple[Shape, str]]:
    """File tensor name -> (shape, init role) for an upsampler built from ``config``, in state-dict order."""
    model = build_upsampler_meta(config)
    layout: dict[str, tuple[Shape, str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        owner_name, _, attr = name.rpartition(".")
        layout[name] = (tuple(tensor.shape), _role(model.get_submodule(owner_name), attr))
    return layout


def fixed_tensors(config: dict) -> dict[str, torch.Tensor]:
    """The values of the layout's ``"fixed"`` tensors, computed by ltx-core's own modules (float32, CPU)."""
    from ltx_core.model.upsampler.blur_downsample import BlurDownsample

    model = build_upsampler_meta(config)
    out: dict[str, torch.Tensor] = {}
    for owner_name, module in model.named_modules():
        if isinstance(module, BlurDownsample):
            with torch.device("cpu"):
                real = BlurDownsample(dims=module.dims, stride=module.stride, kernel_size=module.kernel_size)
            out[f"{owner_name}.kernel"] = real.kernel
    return out
