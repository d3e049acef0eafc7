"""Which denoising accelerations a run uses, from the user's flags, the plan and the machine (pure, no GPU).

- compiled blocks: ``compile_choice.decide_compile`` (``--compile``; ``auto`` weighs the clips ahead);
- CUDA graph of the whole forward (``--cuda-graph auto|off``): CUDA, batched guidance, and every block resident or
  streamed from pinned memory (the graph then holds the copies, ``accel.step_graph``); blocks read from the file
  between blocks are host work no graph can hold, so those runs stay eager;
- text K/V kept for the run: every block resident and the budget has room for them (``text_kv_bytes``);
  they then join the denoise stage's predicted peak (``extra_peak_bytes``).
Each choice carries its reason, printed in the plan and report. Nothing here runs a kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

from ltx2_edge.accel.compile_choice import CompileDecision, CompileEconomics, decide_compile
from ltx2_edge.accel.engine import AccelSettings
from ltx2_edge.plan.step_time import GRAPH_MIN_REPLAYS  # the planner prices the same rule

CUDA_GRAPH_MODES: tuple[str, ...] = ("auto", "off")


@dataclass(frozen=True)
class AccelInputs:
    """What the choice depends on. ``budget_bytes`` None: no device budget."""

    compile_mode: str
    compile_support: str | None
    compile_economics: CompileEconomics | None
    cuda_graph_mode: str
    device_type: str
    batched: bool
    block_perturbations: bool
    streamed_blocks: int
    budget_bytes: int | None
    predicted_peak_bytes: int
    text_kv_bytes: int
    steps: int  # forwards per guidance pass in this run (the graph is captured at step 1, replayed from step 2)
    stream_tier: str = "pinned"  # where streamed blocks wait (the plan's source_tier): "pinned" or "file"
    capture_room: bool = True  # the plan kept room for a capture (``StagePlan.no_capture_room`` False)


@dataclass(frozen=True)
class AccelChoice:
    settings: AccelSettings
    extra_peak_bytes: int  # memory the choice adds to the denoise stage's predicted peak
    compile_economics: CompileEconomics | None = None  # what ``--compile auto`` weighed (the report shows it)


def choose_accel(x: AccelInputs) -> AccelChoice:
    """The run's ``AccelSettings``; ``ValueError`` (one line) for a flag that cannot be honoured."""
    if x.cuda_graph_mode not in CUDA_GRAPH_MODES:
        raise ValueError(f"cuda_graph={x.cuda_graph_mode!r} is not allowed: one of {', '.join(CUDA_GRAPH_MODES)}")
    if not x.batched:
        decide_compile(x.compile_mode, x.compile_support, x.compile_economics, x.block_perturbations)  # validates
        why = "sequential guidance (the oracle's path) runs ltx-core's forward as it is"
        return AccelChoice(AccelSettings(reasons=(why,)), 0, x.compile_economics)
    compiled: CompileDecision = decide_compile(x.compile_mode, x.compile_support, x.compile_economics,
                                               x.block_perturbations)  # fmt: skip
    resident = x.streamed_blocks == 0
    if x.cuda_graph_mode == "off":
        graph, graph_why = False, "no CUDA graph (--cuda-graph off)"
    elif x.device_type != "cuda":
        graph, graph_why = False, f"no CUDA graph on {x.device_type}"
    elif not resident and x.stream_tier != "pinned":
        graph, graph_why = False, (f"no CUDA graph: {x.streamed_blocks} blocks are read from the file between blocks "
                                   "(host reads cannot be captured)")  # fmt: skip
    elif not x.capture_room:
        graph, graph_why = False, "no CUDA graph: the budget leaves no room for its capture (the plan's choice)"
    elif x.steps - 2 < GRAPH_MIN_REPLAYS:
        graph, graph_why = False, (f"no CUDA graph: {max(x.steps - 2, 0)} replays would not pay back its capture "
                                   f"(needs >= {GRAPH_MIN_REPLAYS})")  # fmt: skip
    elif not resident:
        graph, graph_why = True, (f"CUDA graph: whole forward captured once with the copies of its {x.streamed_blocks} "
                                  "streamed blocks, replayed each step")  # fmt: skip
    else:
        graph, graph_why = True, "CUDA graph: whole forward captured once, replayed each step"
    room = x.budget_bytes is None or x.predicted_peak_bytes + x.text_kv_bytes <= x.budget_bytes
    if resident and room:
        kv, kv_why = True, f"text K/V computed once per run ({x.text_kv_bytes / 2**30:.2f} GiB kept)"
    elif not resident:
        kv, kv_why = False, "text K/V per step: blocks stream"
    else:
        kv, kv_why = False, f"text K/V per step: keeping them ({x.text_kv_bytes / 2**30:.2f} GiB) exceeds the budget"
    settings = AccelSettings(compile=compiled.enabled, cuda_graph=graph, freeze_text_kv=kv,
                             reasons=(compiled.reason, graph_why, kv_why))  # fmt: skip
    return AccelChoice(settings, x.text_kv_bytes if kv else 0, x.compile_economics)
