# Device command (issue 7, call 2 of 2): the peers on the same checkpoint and W1: ltx-pipelines 1.0.0 (bf16 CFG-only
# = the baseline of every ratio; under a 32 GiB cap; fp8_cast; default guidance) and diffusers 0.42.1 LTX2Pipeline
# with random weights of the same sizes (model offload, group offloading, both under 32 GiB).
# diffusers runs in its own site dir, /tmp/dsite: it needs huggingface_hub >= 1.32, which the transformers 4.57.6
# that ltx-core needs (in /tmp/site) refuses; there it uses the image's transformers 5.17 / huggingface_hub 1.33 /
# accelerate 1.15 / tokenizers 0.23, with the carried .whl/diffusers/diffusers-0.42.1-py3-none-any.whl and av.
# `run` with carry [".whl"]. $OUT gets: peers.json, peers.log, make_full.log, peers_table.md.
set -o pipefail
CALL_START=$(date +%s)  # reference.py starts no run expected to end after 540 s from here, kills one at 585 s
source bench/device/prelude.sh
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/dsite .whl/diffusers/*.whl \
  .whl/av-*.whl || echo "diffusers not installed: carry .whl/diffusers/diffusers-0.42.1-py3-none-any.whl"
PYTHONPATH=/tmp/dsite:$PWD/src python3 -c "import diffusers, transformers, huggingface_hub, accelerate, av; print(
  'diffusers env:', diffusers.__version__, transformers.__version__, huggingface_hub.__version__, accelerate.__version__)"
source bench/device/make_full.sh >/dev/null
python3 bench/reference.py peers --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
  --out-dir "$OUT" --call-start "$CALL_START" --diffusers-path /tmp/dsite
python3 bench/reference_table.py "$OUT/peers.json" | tee "$OUT/peers_table.md"
