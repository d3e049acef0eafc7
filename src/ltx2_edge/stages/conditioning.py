"""Image-to-video conditioning: ``--image PATH FRAME_IDX STRENGTH [CRF]`` specs, their checks, their latents.

As ltx-pipelines 1.0.0's ``combined_image_conditionings``: an image at frame 0 replaces the first latent frame
(ltx-core ``VideoConditionByLatentIndex``); an image at any other frame is appended as keyframe tokens whose
positions start at that frame (``VideoConditionByKeyframeIndex``). The conditioned tokens start ``1 - STRENGTH``
noised and every step's prediction is blended back towards the image in that proportion (1: kept exactly, 0: the
image has no effect).

Checks come in two parts, both before any weight is loaded: ``validate_image_specs`` (pure: indices, strengths,
CRF against the clip's size) and ``check_image_files`` (opens and decodes each file). This module never loads
weights (the encoder is passed in) and never re-implements ltx-core's conditioning classes: it builds them.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import torch
from ltx_core.conditioning import ConditioningItem, VideoConditionByKeyframeIndex, VideoConditionByLatentIndex
from PIL import Image, UnidentifiedImageError

from ltx2_edge.errors import RequestError
from ltx2_edge.inputs import MAX_CRF, ImageSpec
from ltx2_edge.mp4.encoder import require_encoders

LATENT_PIXELS = 32  # one latent token per 32x32 pixels
# 8-bit modes PIL converts to RGB without loss of meaning; 16-bit and float images would be clipped, not scaled.
_EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
# PIL's own decompression-bomb warning threshold (~89.5 MP): a header claiming more is refused before decoding.
# An 8K frame is 33 MP; every image is scaled to the clip's size anyway.
MAX_IMAGE_PIXELS = 89_478_485


def _typed(spec: ImageSpec) -> str:
    """The spec as one would type it after ``--image`` (what its errors show as the value)."""
    return f"{spec.path} {spec.frame_idx} {spec.strength} {spec.crf}"


def _refuse(i: int, value: object, allowed: str) -> RequestError:
    return RequestError("--image", value, f"for image {i + 1}, {allowed}")


def validate_image_specs(specs: Sequence[ImageSpec], width: int, height: int, num_frames: int) -> None:
    """Raise ``RequestError`` for the first spec that cannot condition a ``width``x``height``, ``num_frames`` clip.

    Pure (no file access). The official code accepts any FRAME_IDX; we refuse what it would silently misuse:
    indices outside the clip, and two images on one frame (the later one would overwrite or duplicate it).
    """
    for name, value in (("--width", width), ("--height", height)):
        if value <= 0 or value % LATENT_PIXELS:
            raise RequestError(name, value, f"a positive multiple of {LATENT_PIXELS} (the latent grid images map to)")
    used: dict[int, int] = {}
    for i, spec in enumerate(specs):
        idx = spec.frame_idx
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < num_frames:
            raise _refuse(i, _typed(spec), f"FRAME_IDX an integer from 0 to {num_frames - 1} (a frame of the "
                          f"{num_frames}-frame clip; 0 replaces the first frame, others add a keyframe)")  # fmt: skip
        if idx in used:
            raise _refuse(i, _typed(spec), f"FRAME_IDX {idx} is taken: a frame no other image uses (image "
                          f"{used[idx] + 1} has it)")  # fmt: skip
        used[idx] = i
        s = spec.strength
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not (math.isfinite(s) and 0.0 <= s <= 1.0):
            raise _refuse(i, _typed(spec), "STRENGTH a number from 0 (no effect) to 1 (the frame keeps the image)")
        crf = spec.crf
        if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= MAX_CRF:
            raise _refuse(i, _typed(spec), f"CRF an integer from 0 (no H.264 pass) to {MAX_CRF}")


def _read_header(i: int, path: Path) -> tuple[str, tuple[int, int]]:
    """Mode and size from the image's header, refusing an absurd size before a single pixel is decoded."""
    limit = f"an image of at most {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # our own limit says it in one line
            with Image.open(path) as img:
                mode, size = img.mode, img.size
                if size[0] * size[1] <= MAX_IMAGE_PIXELS:
                    img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _refuse(i, str(path), f"{limit} (its header claims more): scale it down") from None
    except UnidentifiedImageError:
        raise _refuse(i, str(path), "an image PIL can read (PNG, JPEG, WebP, BMP, ...)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # PIL's plugins raise all of these for bad files
        raise _refuse(i, str(path), f"a readable, complete image file ({exc})") from None
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise _refuse(i, str(path), f"{limit} (its header says {size[0]}x{size[1]}): scale it down (it is fitted to "
                      "the clip's size anyway)")  # fmt: skip
    return mode, size


def check_image_files(specs: Sequence[ImageSpec]) -> list[tuple[int, int]]:
    """Open and decode every image now, so a bad file fails before any weight loads; returns (width, height)s.

    ``RequestError`` names the image and why (missing, a directory, not readable, not an image, a header that
    claims more than ``MAX_IMAGE_PIXELS`` (refused before decoding), not 8-bit, too small for H.264);
    ``EncoderMissingError`` if a CRF > 0 needs libx264 and PyAV lacks it.
    """
    sizes = []
    for i, spec in enumerate(specs):
        path = Path(spec.path)
        if not path.exists():
            raise _refuse(i, str(path), "an existing image file (no such file)")
        if path.is_dir():
            raise _refuse(i, str(path), "an image file, not a directory")
        mode, size = _read_header(i, path)
        if mode not in _EIGHT_BIT_MODES:
            raise _refuse(i, str(path), f"an 8-bit image (this one is mode {mode}): save it as 8-bit RGB")
        if spec.crf > 0 and min(size) < 2:
            raise _refuse(i, str(path), f"an image of at least 2x2 pixels for CRF {spec.crf} (got {size})")
        sizes.append(size)
    if any(spec.crf > 0 for spec in specs):
        require_encoders(("libx264",))
    return sizes


def conditioning_token_count(specs: Sequence[ImageSpec], width: int, height: int) -> int:
    """Video tokens the images add to every transformer forward: one latent frame per keyframe (frame 0 adds none)."""
    keyframes = sum(1 for spec in specs if spec.frame_idx != 0)
    return keyframes * (height // LATENT_PIXELS) * (width // LATENT_PIXELS)


def image_device_pixels(size: tuple[int, int], width: int, height: int) -> int:
    """RGB pixels an image of ``size`` (width, height) holds on the device at once while ``load_image`` fits it:
    the source and its scaled-to-cover copy (``fit_to_frame``), both float32. What the planner counts at 12 B."""
    src_w, src_h = size
    scale = max(height / src_h, width / src_w)
    return src_w * src_h + math.ceil(src_h * scale) * math.ceil(src_w * scale)


def read_rgb(path: Path) -> np.ndarray:
    """The image's pixels as uint8 [H, W, 3]: alpha dropped (as the official ``[..., :3]``), other modes to RGB."""
    with Image.open(path) as img:
        return np.array(img if img.mode == "RGB" else img.convert("RGB"))


def h264_roundtrip(pixels: np.ndarray, crf: int) -> np.ndarray:
    """One frame through libx264 at ``crf`` (preset veryfast, yuv420p) and back, as the official ``preprocess``.

    The model saw compressed video in training; this gives a still image the same kind of artifacts. CRF 0
    returns ``pixels`` untouched. x264 needs even sizes, so an odd last row or column is dropped, as officially.
    """
    if crf == 0:
        return pixels
    height, width = pixels.shape[0] // 2 * 2, pixels.shape[1] // 2 * 2
    with io.BytesIO() as out:
        container = av.open(out, "w", format="mp4")
        try:
            stream = container.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": "veryfast"})
            stream.height, stream.width = height, width
            frame = av.VideoFrame.from_ndarray(pixels[:height, :width], format="rgb24").reformat(format="yuv420p")
            container.mux(stream.encode(frame))
            container.mux(stream.encode())
        finally:
            container.close()
        encoded = out.getvalue()
    with av.open(io.BytesIO(encoded)) as container:
        stream = next(s for s in container.streams if s.type == "video")
        return next(container.decode(stream)).to_ndarray(format="rgb24")


def fit_to_frame(pixels: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[H, W, 3] float pixels -> [1, 3, 1, height, width]: scale to cover (bilinear), then centre-crop.

    Op for op ``ltx_pipelines.utils.media_io.resize_and_center_crop`` (same strides into ``interpolate``, so the
    same kernel and the same bits). The scaled size is rounded up so the crop never comes out short.
    """
    chw = pixels.permute(2, 0, 1).unsqueeze(0)
    src_h, src_w = chw.shape[2], chw.shape[3]
    scale = max(height / src_h, width / src_w)
    new_h, new_w = math.ceil(src_h * scale), math.ceil(src_w * scale)
    scaled = torch.nn.functional.interpolate(chw, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    cropped = scaled[:, :, top : top + height, left : left + width]
    return cropped.permute(1, 0, 2, 3).unsqueeze(0)


def load_image(spec: ImageSpec, width: int, height: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The encoder's input for ``spec``: [1, 3, 1, height, width] in [-1, 1] (``IMAGE_FIT_RULE``)."""
    pixels = h264_roundtrip(read_rgb(Path(spec.path)), spec.crf)
    fitted = fit_to_frame(torch.tensor(pixels, dtype=torch.float32, device=device), width, height)
    return (fitted / 127.5 - 1.0).to(device=device, dtype=dtype)


@torch.inference_mode()
def encode_images(
    specs: Sequence[ImageSpec], encoder: torch.nn.Module, width: int, height: int
) -> list[ConditioningItem]:
    """Encode each image at ``width``x``height`` with the video VAE ``encoder`` (on its device, in its dtype) and
    build its ltx-core conditioning item, in ``specs`` order (the order they are applied to the initial state).

    Call ``validate_image_specs`` and ``check_image_files`` first. A two-stage pipeline encodes once per stage
    resolution, as the official one does.
    """
    weight = next(encoder.parameters())
    items: list[ConditioningItem] = []
    for spec in specs:
        latent = encoder(load_image(spec, width, height, weight.device, weight.dtype))
        if spec.frame_idx == 0:
            items.append(VideoConditionByLatentIndex(latent=latent, strength=spec.strength, latent_idx=0))
        else:
            items.append(
                VideoConditionByKeyframeIndex(keyframes=latent, frame_idx=spec.frame_idx, strength=spec.strength)
            )
    return items
