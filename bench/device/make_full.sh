# Generates the full-size random checkpoint on the device box if it is not there yet: the transformer file on
# disk, the Gemma folder in RAM-backed /dev/shm (the box's ~64 GB disk cannot hold both).
if [ ! -f "$CKPT_DIR/ltx2.safetensors" ] || [ ! -f "$GEMMA_DIR/config.json" ]; then
  mkdir -p "$CKPT_DIR"
  /usr/bin/time -v python3 -m ltx2_edge make-checkpoint --size full --out "$CKPT_DIR" --gemma-dir "$GEMMA_DIR" \
    --device cuda 2>&1 | grep -E "Elapsed|Maximum resident|CheckpointPaths|rror" | tee -a "$OUT/make_full.log"
fi
ls -la "$CKPT_DIR" "$GEMMA_DIR" | tee -a "$OUT/make_full.log"
