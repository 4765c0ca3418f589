#!/usr/bin/env bash
# The actor pipeline on a GPU: end-to-end checks and the issue's numbers,
# run on the device machine in one call.
#
# Build here first (the device needs no Go toolchain):
#   CGO_ENABLED=0 go test -c -o .devcarry/gpupipe/tests.test ./tests
#   CGO_ENABLED=0 go build -o .devcarry/gpupipe/pipeline ./cmd/pipeline
# then run with .devcarry/gpupipe carried (DIR= elsewhere):
#   scripts/device/gpu-pipeline.sh                 # everything
#   STEPS="test decode" scripts/device/gpu-pipeline.sh
#
# Steps:
#   test     tests/pipeline_gpu_test.go: golden tokens, lazy == eager, concurrency
#   decode   pipeline bench --json, actors and --eager ($MODES): decode at batch 1 and
#            prompt processing at 512 tokens on 1B-shaped Q8_0/F16/Q4_0 and an
#            8B-shaped Q4_K model generated here (gen-model), and the bundled model
#   cold     process start to first token with the file dropped from the page
#            cache (run --cold), lazy vs --eager vs lazy without the background
#            read-ahead (--read-ahead off), and the file's cold read time; the
#            last cold lazy run is traced (run --trace), its start summarised
#            by scripts/device/startup-summary.py ($COLD_MODES picks the runs)
#   conc     aggregate decode tok/s at 1, 8, 32, 64 concurrent prompts
#   trace    bench --trace on the 1B Q8_0 model: the timeline's tracks (uploads
#            on the copy stream, layer steps on the compute stream)
#   direct   BenchmarkDecodeDirect (model/gpustep's steps without actors, needs
#            $DIR/gpustep.test) against the pipeline's decode: the actors' cost
#   ab       BenchmarkDecodeDirect under each of $AB (env settings, "-" for
#            none), rounds interleaved: e.g. programmatic dependent launch
#            off (FORGEPIPE_PDL=0), triggered early (FORGEPIPE_PDL_EARLY=1) or with weight prefetch
#            (FORGEPIPE_PREFETCH_WEIGHTS=1) against the default
#   abpipe   pipeline bench (decode at batch 1 after 512 prompt tokens) under each of
#            $PIPE_AB (bench flags, "," between flags of one entry, "-" for none) on
#            $AB_MODELS, rounds interleaved: e.g. PIPE_AB="- --no-chain"
#   ncu      every kernel of whole decode tokens of BenchmarkDecodeDirect under
#            Nsight Compute (durations with caches flushed, DRAM bytes), summed
#            per kernel by scripts/device/ncu-summary.py, against the step time
#            measured without the profiler: what the launch gaps cost
# Full logs and JSON go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu-pipeline}
mkdir -p "$OUT"
STEPS=${STEPS:-test decode cold conc trace direct}
TYPES=${TYPES:-q8_0 f16 q4_0}
BIG=${BIG-8b-q4_k}
MODES=${MODES:-actors eager} # decode: the actor pipeline, --eager
DIR=${DIR:-.devcarry/gpupipe}
PIPE=$DIR/pipeline
export FORGEPIPE_KERNEL_CACHE=${FORGEPIPE_KERNEL_CACHE:-/tmp/forgepipe-kernel-cache}
rc=0
has() { [[ " $STEPS " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.memory --format=csv,noheader || true

gen() { # preset type -> path
  local f=/tmp/$1-$2.gguf
  [[ -f $f ]] || "$PIPE" gen-model --preset "$1" --type "$2" --vocab-from models/forgepipe-tiny.f16.gguf --out "$f" >"$OUT/gen-$1-$2.log" 2>&1 || echo "gen-model $1 $2 FAILED" >&2
  echo "$f"
}
# summary of one bench --json: tok/s and GB/s of the last rep (the first warms up)
summ() {
  python3 -c '
import json,sys
r=json.load(open(sys.argv[1])); x=r["reps"][-1]
g, s = r.get("gpu") or {}, r.get("sampler") or {}
print("%-22s %-7s prompt %5d: %9.0f tok/s | decode %7.1f tok/s %7.0f GB/s | c=%-2d aggregate %8.1f tok/s | ttft %.1f ms | graphs %s/%s steps, %s captured | %s of %s rows chained | %s" % (
  sys.argv[2], r["mode"], r["prompt_tokens"], x["prompt_tok_s"], x["decode_tok_s"], x.get("decode_gb_s",0),
  r["concurrency"], x["aggregate_tok_s"], x["ttft_ms"], g.get("GraphLaunches","-"), g.get("Steps","-"), g.get("GraphCaptures","-"),
  s.get("Chained","-"), s.get("Tokens","-"), r["device"]))' "$1" "$2"
}
bench() { # name model args...
  local name=$1 m=$2; shift 2
  "$PIPE" bench --model "$m" --backend "${BACKEND:-cuda}" --json "$@" >"$OUT/$name.json" 2>"$OUT/$name.log" &&
    summ "$OUT/$name.json" "$name" || { echo "$name FAILED"; tail -5 "$OUT/$name.log"; rc=1; }
}

if has decode || has cold || has conc || has trace || has direct || has ab || has abpipe || has ncu; then
  (for t in $TYPES; do gen 1b "$t" >/dev/null; done; [[ -n $BIG ]] && gen "${BIG%-*}" "${BIG#*-}" >/dev/null) &
  gen_pid=$!
fi

if has test; then
  "$DIR/tests.test" -test.v -test.count=1 -test.run "${RUN:-GPU}" >"$OUT/test.log" 2>&1
  t=$?
  [[ $t -ne 0 ]] && rc=1
  grep -E '^\s*(--- FAIL|--- PASS|ok|FAIL|PASS)|error|no GPU|panic|uploads' "$OUT/test.log" | head -60
  echo "tests rc=$t"
fi

[[ -n ${gen_pid:-} ]] && wait "$gen_pid"

if has decode; then
  for mode in $MODES; do
    a=(); [[ $mode == eager ]] && a=(--eager)
    bench "bundled-$mode" models/forgepipe-tiny.f16.gguf --prompt-tokens 128 --gen-tokens 256 --reps 3 "${a[@]}"
  done
  for m in $(for t in $TYPES; do echo "1b-$t"; done) $BIG; do
    f=/tmp/$m.gguf
    [[ -f $f ]] || continue
    for mode in $MODES; do
      a=(--max-batch 512); [[ $mode == eager ]] && a=(--eager)
      bench "$m-$mode" "$f" --prompt-tokens 512 --gen-tokens 128 --reps 3 "${a[@]}"
    done
  done
fi

if has cold; then
  for m in 1b-q8_0 $BIG; do
    f=/tmp/$m.gguf
    [[ -f $f ]] || continue
    python3 - "$f" <<'EOF' >>"$OUT/cold.txt" 2>&1
import os, sys, time
f = sys.argv[1]
fd = os.open(f, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
t = time.time(); n = 0
while True:
    b = os.read(fd, 16 << 20)
    if not b: break
    n += len(b)
dt = time.time() - t
print("%s: cold read %.0f MB in %.3f s = %.2f GB/s" % (os.path.basename(f), n / 1e6, dt, n / dt / 1e9))
EOF
    tail -1 "$OUT/cold.txt"
    for mode in ${COLD_MODES:-lazy lazy-noreadahead eager warm-lazy warm-eager lazy-trace}; do
      args=(--max-tokens 1 --json --backend "${BACKEND:-cuda}" --temperature 0 --prompt "Once upon a time")
      [[ $mode == *eager ]] && args+=(--eager)
      [[ $mode == *noreadahead ]] && args+=(--read-ahead off)
      [[ $mode == *trace ]] && args+=(--trace "$OUT/cold-trace-$m.json")
      [[ $mode != warm-* ]] && args+=(--cold)
      s=$(date +%s%N)
      "$PIPE" run --model "$f" "${args[@]}" >"$OUT/cold-$m-$mode.json" 2>"$OUT/cold-$m-$mode.log" || { echo "cold $m $mode FAILED"; tail -3 "$OUT/cold-$m-$mode.log"; rc=1; }
      e=$(date +%s%N)
      echo "$m $mode: process start to exit $(( (e - s) / 1000000 )) ms; $(python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["timings"]; print("first token %s ms from the command start; load/plan %.0f ms, ttft %.0f ms" % (t.get("first_token_ms", "-"), t["load_ms"], t["ttft_ms"]))' "$OUT/cold-$m-$mode.json" 2>/dev/null)"
      [[ $mode == *trace ]] && python3 scripts/device/startup-summary.py "$OUT/cold-trace-$m.json"
    done
  done
fi

if has conc; then
  f=/tmp/1b-q8_0.gguf
  for c in 1 8 32 64; do
    bench "conc-$c" "$f" --prompt-tokens 32 --gen-tokens 128 --reps 2 --concurrency "$c" --max-batch 512
  done
fi
if has trace; then
  f=/tmp/1b-q8_0.gguf
  "$PIPE" bench --model "$f" --backend "${BACKEND:-cuda}" --json --prompt-tokens 64 --gen-tokens 16 --reps 1 --concurrency 2 \
    --prefetch 2 --trace "$OUT/trace.json" >"$OUT/trace-bench.json" 2>"$OUT/trace-bench.log" || { echo "trace FAILED"; rc=1; }
  python3 scripts/device/trace-summary.py "$OUT/trace-bench.json" "$OUT/trace.json"
fi

if has direct; then
  for m in 1b-q8_0; do
    f=/tmp/$m.gguf
    [[ -f $f && -x $DIR/gpustep.test ]] || continue
    FORGEPIPE_BENCH_MODEL=$f "$DIR/gpustep.test" -test.run '^$' -test.bench DecodeDirect -test.benchtime 128x -test.count 3 2>&1 | grep -E "tok/s|FAIL|panic" | sed "s/^/$m /"
    bench "$m-pipe" "$f" --prompt-tokens 512 --gen-tokens 128 --reps 3 --max-batch 512
  done
fi
# ab_rounds LIST RUN: for each model of $AB_MODELS, $ROUNDS rounds of
# RUN MODEL FILE ENTRY ROUND over the entries of LIST ("-" for none),
# interleaved so that drift hits every entry alike.
ab_rounds() {
  local list=$1 run=$2 m f round e
  for m in ${AB_MODELS:-1b-q8_0 $BIG}; do
    f=/tmp/$m.gguf
    [[ -f $f ]] || continue
    for round in $(seq "${ROUNDS:-3}"); do
      for e in $list; do
        [[ $e == - ]] && e=
        "$run" "$m" "$f" "$e" "$round"
      done
    done
  done
}
ab_direct() { # model file env-entry round
  env ${3//,/ } FORGEPIPE_BENCH_MODEL=$2 "$DIR/gpustep.test" -test.run '^$' -test.bench DecodeDirect -test.benchtime 256x 2>&1 |
    grep -E "tok/s|FAIL|panic" | sed "s/^/$1 ${3:-default} round $4: /"
}
ab_pipe() { # model file flags-entry round
  bench "ab-$1-${3//[ ,]/}-$4" "$2" --prompt-tokens 512 --gen-tokens 128 --reps 2 --max-batch 512 ${3//,/ }
}
if has ab && [[ -x $DIR/gpustep.test ]]; then
  ab_rounds "${AB:-- FORGEPIPE_PDL=0 FORGEPIPE_PDL_EARLY=1 FORGEPIPE_PREFETCH_WEIGHTS=1}" ab_direct
fi
if has abpipe; then
  ab_rounds "${PIPE_AB:-- --no-chain}" ab_pipe
fi

if has ncu; then
  for m in ${NCU_MODELS:-1b-q8_0 $BIG}; do
    f=/tmp/$m.gguf
    [[ -f $f && -x $DIR/gpustep.test ]] || continue
    FORGEPIPE_BENCH_MODEL=$f "$DIR/gpustep.test" -test.run '^$' -test.bench DecodeDirect -test.benchtime 128x -test.count 2 2>&1 | grep -E "tok/s|FAIL|panic" | sed "s/^/$m /"
    # Skip the prompt step and the warm-up tokens (about 30 launches a layer
    # for the prompt, 15 a token); ncu-summary.py keeps whole tokens only.
    layers=$(python3 -c 'import sys; print(32 if "8b" in sys.argv[1] else 16)' "$m")
    FORGEPIPE_BENCH_MODEL=$f timeout 400 ncu --clock-control none --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
      --csv --page raw --launch-skip $((layers * 200)) --launch-count $((layers * 40)) \
      "$DIR/gpustep.test" -test.run '^$' -test.bench DecodeDirect -test.benchtime 64x >"$OUT/ncu-$m.csv" 2>"$OUT/ncu-$m.log" || { echo "ncu $m FAILED"; tail -5 "$OUT/ncu-$m.log"; }
    python3 scripts/device/ncu-summary.py "$OUT/ncu-$m.csv" | sed "s/^/$m /"
  done
fi
exit $rc
