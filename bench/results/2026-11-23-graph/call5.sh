# Device command (issue 5 groundwork): one W1 step eager vs CUDA graph, fp8 and bf16; and a check that the
# checkpoint generator's values are the same generated on CUDA and on the CPU.
set -o pipefail
source bench/device/prelude.sh
python3 - <<'PY' 2>&1 | tee "$OUT/generator_cuda_vs_cpu.log"
import torch, ltx2_edge
from ltx2_edge.checkpoint.configs import ltx2_config
from ltx2_edge.checkpoint.layout import expected_tensors
from ltx2_edge.synth.init_scheme import make_tensor
layout = expected_tensors(ltx2_config("full"))
for name in ("model.diffusion_model.transformer_blocks.7.ff.net.0.proj.weight",
             "model.diffusion_model.transformer_blocks.7.ff.net.0.proj.bias",
             "model.diffusion_model.transformer_blocks.7.scale_shift_table"):
    a = make_tensor(name, layout, seed=0, dtype=torch.bfloat16, device="cpu")
    b = make_tensor(name, layout, seed=0, dtype=torch.bfloat16, device="cuda").cpu()
    print(name, tuple(a.shape), "identical" if torch.equal(a.view(torch.int16), b.view(torch.int16)) else "DIFFERENT")
PY
source bench/device/make_full.sh
for q in fp8 bf16; do
  timeout 150 python3 bench/graph_step.py --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --quantization $q \
    --out "$OUT/graph_$q.json" 2>&1 | tail -12
done
