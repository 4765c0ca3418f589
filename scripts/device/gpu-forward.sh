#!/usr/bin/env bash
# GPU check and decode benchmark of model/gpufwd (the eager forward pass on
# a GPU), run on the device machine in one call.
#
# Build here first (the device needs no Go toolchain):
#   CGO_ENABLED=0 go test -c -o .devcarry/gpufwd/gpufwd.test ./model/gpufwd
#   CGO_ENABLED=0 go build -o .devcarry/gpufwd/pipeline ./cmd/pipeline
# then run with .devcarry/gpufwd carried (DIR= elsewhere):
#   scripts/device/gpu-forward.sh              # tests, 1B models, decode benchmarks
#   STEPS=test scripts/device/gpu-forward.sh   # only some of: test bench
#   TYPES="q8_0" scripts/device/gpu-forward.sh # 1B model types to benchmark
#
# Tests: the bundled model's greedy tokens against models/golden.json and
# logits against the host (model.Forward) for the bundled model and
# synthetic llama/qwen2 models (F16, Q8_0, Q4_K). Benchmarks: greedy decode
# at batch 1 (BenchmarkDecode: tok/s, weight GB/s, device time per token and
# per block, host enqueue time) on the bundled model and on 1B-shaped
# synthetic models generated here. Full logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu-forward}
mkdir -p "$OUT"
STEPS=${STEPS:-test bench}
TYPES=${TYPES:-q8_0 f16 q4_k}
DIR=${DIR:-.devcarry/gpufwd}
BIN=$DIR/gpufwd.test
PIPE=$DIR/pipeline
export FORGEPIPE_KERNEL_CACHE=${FORGEPIPE_KERNEL_CACHE:-/tmp/forgepipe-kernel-cache}
rc=0
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.memory --format=csv,noheader || true

# The 1B models are generated in the background while the tests run.
gen_pid=
if [[ " $STEPS " == *" bench "* ]]; then
  (for t in $TYPES; do
     s=$(date +%s)
     "$PIPE" gen-model --preset 1b --type "$t" --vocab-from models/forgepipe-tiny.f16.gguf --out "/tmp/1b-$t.gguf" >"$OUT/gen-$t.log" 2>&1 ||
       echo "gen-model $t FAILED"
     echo "gen-model 1b $t: $(( $(date +%s) - s )) s, $(du -m /tmp/1b-$t.gguf | cut -f1) MiB"
   done) &
  gen_pid=$!
fi

if [[ " $STEPS " == *" test "* ]]; then
  "$BIN" -test.v -test.count=1 -test.run "${RUN:-.}" >"$OUT/test.log" 2>&1
  t=$?
  [[ $t -ne 0 ]] && rc=1
  grep -E '^\s*(--- FAIL|ok|FAIL|PASS)|relative error|no GPU|panic|Error|generated' "$OUT/test.log" | head -90
  echo "tests rc=$t"
fi

if [[ " $STEPS " == *" bench "* ]]; then
  bench() { # name path
    FORGEPIPE_BENCH_MODEL=$2 "$BIN" -test.run '^$' -test.bench Decode -test.benchtime "${BENCHTIME:-200x}" >"$OUT/bench-$1.log" 2>&1 || rc=1
    grep -E '^Benchmark.*tok/s|by op|FAIL|panic|Error' "$OUT/bench-$1.log" | sed "s/^BenchmarkDecode/$1/"
  }
  bench bundled models/forgepipe-tiny.f16.gguf
  wait "$gen_pid"
  for t in $TYPES; do
    [[ -f /tmp/1b-$t.gguf ]] && bench "1b-$t" "/tmp/1b-$t.gguf"
  done
fi
exit $rc
