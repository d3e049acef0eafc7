"""Audio decode: final audio latent -> mel (AudioDecoder) -> waveform (Vocoder), as ltx-core's decode_audio."""

from __future__ import annotations

import torch
from ltx_core.model.audio_vae import AudioDecoder, Vocoder
from ltx_core.model.audio_vae import decode_audio as _ltx_decode_audio


@torch.inference_mode()
def decode_audio_on_device(latent: torch.Tensor, decoder: AudioDecoder, vocoder: Vocoder) -> tuple[torch.Tensor, int]:
    """Return the waveform [channels, samples] as float32 on the decoders' device (kernels on the current stream)."""
    audio = _ltx_decode_audio(latent, decoder, vocoder)
    return audio.waveform.float(), int(audio.sampling_rate)


def decode_audio(latent: torch.Tensor, decoder: AudioDecoder, vocoder: Vocoder) -> tuple[torch.Tensor, int]:
    """Return the waveform [channels, samples] as float32 on the CPU, and its sample rate."""
    waveform, sample_rate = decode_audio_on_device(latent, decoder, vocoder)
    return waveform.cpu(), sample_rate
