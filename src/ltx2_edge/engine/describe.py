"""What a run says about its stages before they run: each stage's start line and its report technique, and the
report's header (request, device, model, guidance, quantization, budget, plan, LoRAs), all read from the
``RunPlan``.

Plain text from plain data: this module must never load, run or measure anything.
"""

from __future__ import annotations

from pathlib import Path

from ltx2_edge.engine.run_plan import PassPlan, RunPlan
from ltx2_edge.engine.setup import EngineSetup
from ltx2_edge.models.lora import baked_loras
from ltx2_edge.plan.plan_text import plan_to_json
from ltx2_edge.plan.provenance import profile_origin
from ltx2_edge.report import RunReport, device_info, versions
from ltx2_edge.stages.latents import video_token_count

StageText = tuple[str, str]  # (the progress line as it starts, the report's technique column)


def weights_text(setup: EngineSetup) -> str:
    precision = setup.policy.precision
    return "bf16" if precision == "bf16" else f"{precision} Linears, keep-list bf16"


def text_encode(setup: EngineSetup, plan: RunPlan) -> StageText:
    layers = plan.memory.stage("text_encode").technique.split(";")[0]
    over = "prompt and negative prompt" if plan.guidance.uses_negative_prompt else "the prompt (no negative pass)"
    return (f"Gemma 3 over {over}, then the connectors; {layers}",
            f"staged: Gemma language model only ({weights_text(setup)}), {layers}, freed after")  # fmt: skip


def text_gemma_only(setup: EngineSetup, plan: RunPlan) -> StageText:
    """The text stage's row when a batch runs Gemma over every prompt before the connectors (``phased``)."""
    layers = plan.memory.stage("text_encode").technique.split(";")[0]
    return (f"Gemma 3 for this prompt, the connectors after every prompt of the batch; {layers}",
            f"staged: Gemma language model only ({weights_text(setup)}), {layers}, loaded once for the batch's "
            f"prompts; hidden states to host memory")  # fmt: skip


def text_connectors(plan: RunPlan) -> StageText:
    """The connectors' own row in that case."""
    return (
        "the connectors over this prompt's Gemma hidden states",
        f"staged: connectors loaded once for the batch's prompts; {plan.memory.stage('embeddings').technique}",
    )


def encode_image(plan: RunPlan, width: int, height: int) -> StageText:
    stage = plan.memory.stage("encode_image")
    count = len(plan.request.images)
    return (f"video VAE encoder over {count} image(s) at {width}x{height}",
            f"staged: video VAE encoder for this stage only, freed after; {stage.technique}")  # fmt: skip


def denoise(setup: EngineSetup, plan: RunPlan, p: PassPlan) -> StageText:
    run, den = p.run, p.stage
    tokens = video_token_count(run.width, run.height, run.num_frames)
    at = f" at {run.width}x{run.height}" if plan.two_stage else ""
    passes = f"{run.guidance.batch} guidance pass(es) per forward"
    detail = f"{run.steps} steps ({run.schedule} sigmas){at}, {tokens} video tokens, {passes}; {den.technique}"
    residency = den.technique.split(";")[0]
    batching = (f"guidance batched x{run.guidance.batch} in one forward per step"
                if run.guidance.mode == "batched" else "guidance passes run one by one")  # fmt: skip
    fused = f"; {len(run.loras)} LoRA(s) fused at load" if run.loras else ""
    origin = "; from the upsampled latent" if run.from_upsampled else ""
    if run.from_upsampled and "transformer" in plan.keep("upsample"):
        origin += "; weights kept resident from stage 1"
    return detail, f"{weights_text(setup)}{fused}; {residency}; {batching}{origin}"


def upsample(plan: RunPlan) -> StageText:
    r = plan.request
    again = f", {len(r.images)} image(s) re-encoded" if r.images else ""
    technique = (f"staged: video VAE encoder + latent upsampler for this stage only, freed after; "
                 f"{plan.memory.stage('upsample').technique}")  # fmt: skip
    return f"latent upsampler x2 to {r.width}x{r.height}{again}", technique


def decode(plan: RunPlan, device_type: str) -> StageText:
    tiles = plan.memory.stage("decode").tiles
    tiling = tiles.describe() if tiles is not None else "untiled"
    beside = "own CUDA stream" if device_type == "cuda" else "worker thread"
    return (f"video VAE decoder ({tiling}) with the audio decoder + vocoder beside it ({beside}); H.264 + AAC on a "
            "writer thread",
            f"staged: both decoders for this stage only; video {tiling}; audio beside it ({beside}); encoded on a "
            "writer thread")  # fmt: skip


def new_report(setup: EngineSetup, plan: RunPlan, output: Path) -> RunReport:
    """The report of one run, before its stages: what was asked, on what, under which plan."""
    report = RunReport(request=plan.request.to_dict(), device=device_info(setup.device), versions=versions(),
                       output_path=str(output))  # fmt: skip
    report.extra.update(
        profile=profile_origin(setup.profile),
        video_encoder=setup.video_encoder,
        model={"checkpoint": str(setup.checkpoint.path), "model_version": setup.checkpoint.model_version,
               "gemma_root": str(setup.gemma.root), "dtype": str(setup.dtype).removeprefix("torch.")},
        guidance=plan.guidance.describe(),
        quantization={"precision": setup.policy.precision, "policy": setup.policy.describe()},
        budget={"describe": setup.budget.describe(), "device_bytes": setup.budget.device_bytes,
                "host_bytes": setup.budget.host_bytes, "unified": setup.budget.unified,
                "enforcement": setup.enforcement, "allocator": setup.allocator},
        plan=plan_to_json(plan.memory),
        loras={"fused_at_load": {p.run.stage: [f.describe() for f in p.loras] for p in plan.passes},
               "baked_into_checkpoint": baked_loras(setup.checkpoint.header)},
        held={stage: sorted(parts) for stage, parts in plan.keep_after.items()},
    )  # fmt: skip
    if setup.upsampler is not None and plan.two_stage:
        report.extra["model"]["spatial_upsampler"] = str(setup.upsampler.path)
    report.notes.extend(setup.notes)
    return report
