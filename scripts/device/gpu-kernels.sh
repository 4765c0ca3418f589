#!/usr/bin/env bash
# GPU check of kernels/gpu, run on the device machine in one call.
#
# Build here first (the device needs no Go toolchain):
#   CGO_ENABLED=0 go test -c -o .devcarry/gpu/kernels.test ./kernels/gpu
# then run with .devcarry/gpu carried:
#   scripts/device/gpu-kernels.sh            # nvcc check, tests, matvec benchmark
#   STEPS=test scripts/device/gpu-kernels.sh # only some of: nvcc test bench
#
# It compiles the kernel module with nvcc for sm_90 (ptxas register and
# spill report kept), runs every GPU test against its host reference through
# the cuda driver (nvrtc at run time), then times the decode matrix-vector
# products (GB/s of weight bytes, hip events) and the batched attention
# (AttentionRows, AttentionRowsPrefill). Full logs go to $OUT. BIN names
# another test binary (default .devcarry/gpu/kernels.test).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu-kernels}
mkdir -p "$OUT"
STEPS=${STEPS:-nvcc test bench}
BIN=${BIN:-.devcarry/gpu/kernels.test}
export FORGEPIPE_KERNEL_CACHE=${FORGEPIPE_KERNEL_CACHE:-/tmp/forgepipe-kernel-cache}
rc=0
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.memory --format=csv,noheader || true

if [[ " $STEPS " == *" nvcc "* ]]; then
  nvcc --version | tail -2
  # The module as the drivers compile it (kernels/gpu.Source): compat.h, then
  # the .cu files in sourceFiles' order, their include lines dropped.
  mod=$OUT/module.cu
  { cat kernels/gpu/src/compat.h
    for f in $(grep '^var sourceFiles' kernels/gpu/gpu.go | grep -o '"[a-z0-9_]*\.cu"' | tr -d '"'); do
      echo "// ---- $f"; grep -v '^#include "compat.h"' "kernels/gpu/src/$f"
    done; } >"$mod"
  if nvcc -arch=sm_90 --cubin -Xptxas -v -Werror all-warnings -o /dev/null "$mod" >"$OUT/ptxas.txt" 2>&1; then
    echo "nvcc sm_90 module: ok, $(grep -c 'Compiling entry' "$OUT/ptxas.txt") kernels," \
      "$(grep -E 'bytes spill (stores|loads)' "$OUT/ptxas.txt" | grep -vc ' 0 bytes spill stores, 0 bytes spill loads') with spills," \
      "max regs $(grep -o 'Used [0-9]* registers' "$OUT/ptxas.txt" | awk '{print $2}' | sort -n | tail -1)"
  else
    echo "nvcc sm_90 module: FAILED"; tail -20 "$OUT/ptxas.txt"; rc=1
  fi
fi

if [[ " $STEPS " == *" test "* ]]; then
  "$BIN" -test.v -test.count=1 -test.run "${RUN:-.}" >"$OUT/test.log" 2>&1
  t=$?
  [[ $t -ne 0 ]] && rc=1
  grep -E '^(--- |ok|FAIL|PASS)|relative error .* > |no GPU|panic' "$OUT/test.log" | grep -v -- '--- PASS: Test.*/' | head -80
  # worst relative error per kernel family
  grep -oE '(matvec|matvecQ8|dequant|embedding|matmul|matmulF32|rmsnorm|add|swiglu|rope|attention)/[^:]*: relative error [0-9.e+-]+' "$OUT/test.log" |
    awk '{split($1,a,"/"); fam=a[1]; if (fam ~ /^matmul/ && $1 ~ /F32/) fam="matmulF32"; v=$NF+0; if (v>worst[fam]) worst[fam]=v; n[fam]++} END {for (f in worst) printf "worst %-10s %.3g over %d checks\n", f, worst[f], n[f]}' | sort
  echo "tests rc=$t"
fi

if [[ " $STEPS " == *" bench "* ]]; then
  "$BIN" -test.run '^$' -test.bench "${BENCH:-BenchmarkMatVec|BenchmarkCopy|BenchmarkQuantizeAct|BenchmarkLaunch|BenchmarkAttentionRows}" -test.benchtime "${BENCHTIME:-300x}" >"$OUT/bench.log" 2>&1 || rc=1
  # name, then each metric but the host-side ns/op
  grep -E '^Benchmark|FAIL|panic|Error' "$OUT/bench.log" | grep -v '^Benchmark[A-Za-z]*-[0-9]*\s*$' |
    awk '/^Benchmark/ && NF > 4 {sub(/^Benchmark/, "", $1); line = sprintf("%-40s", $1); for (i = 5; i < NF; i += 2) line = line sprintf(" %9s %s", $i, $(i+1)); print line; next} {print}'
fi
exit $rc
