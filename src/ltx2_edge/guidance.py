"""Guidance presets and how a step's guidance passes are laid out as one batch.

What to run lives here (pure data); how it runs lives in ``stages/denoise.py``. The official pipeline runs
up to four separate batch-1 transformer forwards per step (conditional, negative prompt, STG-perturbed,
modality-isolated). ltx-core's ``BatchedPerturbationConfig`` carries a perturbation per batch sample, so all
passes of a step can go through the transformer as one batched forward: every weight crosses memory once
per step instead of up to four times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ltx_core.components.guiders import MultiModalGuider, MultiModalGuiderParams
from ltx_core.guidance.perturbations import Perturbation, PerturbationConfig, PerturbationType

from ltx2_edge.inputs import GUIDANCE_PRESETS, UNGUIDED_PRESET

GuidanceMode = Literal["batched", "sequential"]
PassName = Literal["cond", "uncond", "perturbed", "isolated"]

# The official LTX-2 (19B) guider parameters (ltx_pipelines.utils.constants.LTX_2_PARAMS).
_OFFICIAL_VIDEO = MultiModalGuiderParams(
    cfg_scale=3.0, stg_scale=1.0, rescale_scale=0.7, modality_scale=3.0, skip_step=0, stg_blocks=[29]
)
_OFFICIAL_AUDIO = MultiModalGuiderParams(
    cfg_scale=7.0, stg_scale=1.0, rescale_scale=0.7, modality_scale=3.0, skip_step=0, stg_blocks=[29]
)


# cfg 1, stg 0, modality 1: only the conditional pass runs. rescale 0 keeps MultiModalGuider.calculate an exact
# identity on it (cond + 0 * (cond - 0.0) ...), so results equal the official simple_denoising_func bit for bit.
_UNGUIDED = MultiModalGuiderParams(
    cfg_scale=1.0, stg_scale=0.0, rescale_scale=0.0, modality_scale=1.0, skip_step=0, stg_blocks=[]
)


def _cfg_only(params: MultiModalGuiderParams) -> MultiModalGuiderParams:
    return MultiModalGuiderParams(
        cfg_scale=params.cfg_scale,
        stg_scale=0.0,
        rescale_scale=params.rescale_scale,
        modality_scale=1.0,
        skip_step=0,
        stg_blocks=list(params.stg_blocks or []),
    )


@dataclass(frozen=True)
class Guidance:
    """Guider parameters for video and audio, and whether passes run batched (ours) or one by one (official)."""

    video: MultiModalGuiderParams = field(default_factory=lambda: _cfg_only(_OFFICIAL_VIDEO))
    audio: MultiModalGuiderParams = field(default_factory=lambda: _cfg_only(_OFFICIAL_AUDIO))
    mode: GuidanceMode = "batched"
    preset: str = "cfg"

    def __post_init__(self) -> None:
        if self.mode not in ("batched", "sequential"):
            raise ValueError(f"guidance mode={self.mode!r} is not allowed: batched or sequential")
        for name, p in (("video", self.video), ("audio", self.audio)):
            if p.skip_step != 0:
                # Skipped steps reuse the previous prediction per modality; nothing in our presets asks for it.
                raise ValueError(f"{name} guidance skip_step={p.skip_step} is not supported: use 0")

    @classmethod
    def preset_named(cls, name: str, mode: GuidanceMode = "batched") -> Guidance:
        """``cfg``: W1's guidance (official params, STG off, modality isolation off). ``full``: official defaults."""
        if name == "cfg":
            return cls(mode=mode, preset=name)
        if name == "full":
            return cls(video=_OFFICIAL_VIDEO, audio=_OFFICIAL_AUDIO, mode=mode, preset=name)
        raise ValueError(f"guidance={name!r} is not allowed: one of {', '.join(GUIDANCE_PRESETS)}")

    @classmethod
    def unguided(cls, mode: GuidanceMode = "batched") -> Guidance:
        """One conditional forward per step and no guidance, as the official distilled pipelines denoise
        (``simple_denoising_func``). No negative prompt is used: ``uses_negative_prompt`` is False."""
        return cls(video=_UNGUIDED, audio=_UNGUIDED, mode=mode, preset=UNGUIDED_PRESET)

    @property
    def uses_negative_prompt(self) -> bool:
        """Whether any pass reads the negative contexts (if not, the text stage need not encode that prompt)."""
        return "uncond" in self.passes()

    def passes(self) -> tuple[PassName, ...]:
        """The transformer passes a step needs, in batch order. ``cond`` is always first."""
        v, a = MultiModalGuider(self.video), MultiModalGuider(self.audio)
        out: list[PassName] = ["cond"]
        if v.do_unconditional_generation() or a.do_unconditional_generation():
            out.append("uncond")
        if v.do_perturbed_generation() or a.do_perturbed_generation():
            out.append("perturbed")
        if v.do_isolated_modality_generation() or a.do_isolated_modality_generation():
            out.append("isolated")
        return tuple(out)

    @property
    def batch(self) -> int:
        """Samples per transformer forward in batched mode (what the planner sizes activations for)."""
        return len(self.passes()) if self.mode == "batched" else 1

    def perturbation(self, pass_name: PassName) -> PerturbationConfig:
        """The per-sample perturbation of ``pass_name``, exactly as the official denoising function builds it."""
        if pass_name in ("cond", "uncond"):
            return PerturbationConfig.empty()
        if pass_name == "perturbed":
            items = []
            if MultiModalGuider(self.video).do_perturbed_generation():
                items.append(Perturbation(type=PerturbationType.SKIP_VIDEO_SELF_ATTN, blocks=self.video.stg_blocks))
            if MultiModalGuider(self.audio).do_perturbed_generation():
                items.append(Perturbation(type=PerturbationType.SKIP_AUDIO_SELF_ATTN, blocks=self.audio.stg_blocks))
            return PerturbationConfig(perturbations=items)
        return PerturbationConfig(
            perturbations=[
                Perturbation(type=PerturbationType.SKIP_A2V_CROSS_ATTN, blocks=None),
                Perturbation(type=PerturbationType.SKIP_V2A_CROSS_ATTN, blocks=None),
            ]
        )

    def describe(self) -> dict[str, object]:
        """JSON-ready summary for the report and the MP4 metadata."""

        def one(p: MultiModalGuiderParams) -> dict[str, object]:
            return {
                "cfg_scale": p.cfg_scale,
                "stg_scale": p.stg_scale,
                "stg_blocks": list(p.stg_blocks or []),
                "rescale_scale": p.rescale_scale,
                "modality_scale": p.modality_scale,
            }

        return {
            "preset": self.preset,
            "mode": self.mode,
            "passes": list(self.passes()),
            "video": one(self.video),
            "audio": one(self.audio),
        }
