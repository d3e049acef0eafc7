"""bench/budget_proof.py: allocated and reserved peaks against the prediction, read from the runs' reports."""

import json

from conftest import load_bench

GIB = 1024**3
proof = load_bench("budget_proof")


def _stage(name, allocated, reserved, predicted, budget, within=True):
    details = {"predicted_peak_bytes": int(predicted * GIB), "budget_bytes": int(budget * GIB), "within_budget": within}
    if reserved is not None:
        details["peak_reserved_bytes"] = int(reserved * GIB)
    return {"stage": name, "peak_bytes": int(allocated * GIB), "details": details}


def _call(tmp_path, allocator):
    report = {"budget": {"allocator": allocator} if allocator else {},
              "stages": [_stage("text_encode", 12.0, 12.5, 12.5, 32), _stage("decode", 2.9, 3.95, 3.6, 32),
                         {"stage": "mux", "peak_bytes": 0, "details": {}}]}  # fmt: skip
    records = [{"label": "run-a", "status": "ok", "raw": report, "peak_nvml_bytes": int(13.25 * GIB)},
               {"label": "run-b", "status": "oom", "raw": None}]  # fmt: skip
    path = tmp_path / f"{allocator}.json"
    path.write_text(json.dumps({"records": records}))
    return path


def test_rows_and_errors(tmp_path):
    rows = proof.rows_from([_call(tmp_path, "expandable")])
    assert [(r["run"], r["stage"]) for r in rows] == [("run-a", "text_encode"), ("run-a", "decode")]  # no mux
    decode = rows[1]
    assert abs(decode["error_allocated"] - (2.9 / 3.6 - 1)) < 1e-9
    assert abs(decode["error_reserved"] - (3.95 / 3.6 - 1)) < 1e-9
    assert decode["allocator"] == "expandable"
    # the runtime is the NVML peak less the largest reserved peak (text_encode's 12.5): 0.75 GiB on every stage
    assert decode["runtime"] == int(13.25 * GIB) - int(12.5 * GIB)
    assert abs(decode["error_held"] - ((3.95 + 0.75) / 3.6 - 1)) < 1e-6
    assert abs(rows[0]["error_held"] - (13.25 / 12.5 - 1)) < 1e-6


def test_markdown_summary_counts_stages_within_ten_percent(tmp_path):
    text = proof.markdown(proof.rows_from([_call(tmp_path, None)]))
    assert "| run-a | decode | caching | 2.90 | 3.95 | 0.75 = 4.70 | 3.60 | -19% | +10% | +31% | 32.00 | yes |" in text
    # 3.95 / 3.6 is +9.7%, inside; text_encode's reserved equals its prediction
    assert ("- caching: 2 stages; allocated vs predicted -19%..-4% (1 of 2 within 10%); reserved vs predicted "
            "+0%..+10% (2 of 2 within 10%); held vs predicted +6%..+31% (1 of 2 within 10%)") in text  # fmt: skip
