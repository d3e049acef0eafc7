# Sourced by device calls that time fresh `generate` processes against their plans (bench/prediction_table.py):
# `go LABEL FLAGS...` runs one W1-prompt generate with the model files in CK and rewrites the table after every run,
# so a call cut off keeps its rows. Needs CK, OUT and t() set by the caller.
table() { python3 bench/prediction_table.py table --dir /tmp/pt --out "$OUT/prediction.json" --markdown "$OUT/prediction.md" \
  >/dev/null; tar -czf "$OUT/reports.tgz" -C /tmp/pt .; }
go() { label=$1; shift; python3 bench/prediction_table.py run --dir /tmp/pt --video-dir /tmp --label "$label" -- \
  "${CK[@]}" --prompt "A red kite dances over a windy beach at sunset while waves crash and gulls call." \
  --quiet "$@" | tail -1 | cut -c1-120; t; table; }
