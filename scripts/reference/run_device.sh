#!/usr/bin/env bash
# Regenerates every reference fixture on the device machine (GPU, $PY with
# torch, tiktoken, tokenizers, sentencepiece, transformers) in one call:
#   run(command="bash scripts/reference/run_device.sh", carry=[".devcarry"])
# .devcarry/ (ignored via .git/info/exclude) must hold copies of
#   /work/shared/data/war-and-peace.txt, /work/shared/data/llama3.2-tokenizer/,
#   /work/shared/vocab/ggml-vocab-llama-bpe.gguf.inp and .out
# Outputs in $OUT (copy them into the repository afterwards, see README.md):
#   llama3_tiktoken.json, spm/{spm.model,vocab.json,cases.json},
#   forgepipe-tiny.json, stories260K.json, log.txt
# Each step runs even when an earlier one failed; the exit status is 1 if any failed.
set -uo pipefail
export PYTHONUNBUFFERED=1
R=scripts/reference
C=.devcarry
O=${OUT:-/tmp/refout}
mkdir -p "$O" /tmp/ref
PY=${PYTHON:-python3}
FAILED=0
step() {
  echo "== $*"
  local t0=$SECONDS
  "$@" || { echo "STEP FAILED (rc=$?): $*"; FAILED=1; }
  echo "   ($((SECONDS - t0)) s)"
}
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
  $PY -c "import torch, numpy, tiktoken, tokenizers, sentencepiece, transformers as t; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'tiktoken', tiktoken.__version__, 'tokenizers', tokenizers.__version__, 'sentencepiece', sentencepiece.__version__, 'transformers', t.__version__)"
  step $PY $R/tiktoken_llama3.py --tok-dir $C/llama3.2-tokenizer --text $C/war-and-peace.txt \
       --out "$O/llama3_tiktoken.json" --llamacpp $C/ggml-vocab-llama-bpe.gguf.inp
  step $PY $R/spm_train.py --text $C/war-and-peace.txt --outdir "$O/spm"
  step $PY $R/forward.py models/forgepipe-tiny.f16.gguf --golden models/golden.json --gen 64 \
       --full-logits-runs 2 --out "$O/forgepipe-tiny.json"
  step $PY $R/forward.py models/forgepipe-tiny.f16.gguf --golden models/golden.json --gen 64 \
       --full-logits-runs 2 --dtype float64 --out /tmp/ref/forgepipe-tiny.f64.json --compare "$O/forgepipe-tiny.json"
  step $PY $R/forward.py testdata/stories260K.gguf --prompt-ids 1,403,407,261,378 --gen 48 \
       --full-logits --out "$O/stories260K.json"
  step $PY $R/forward.py testdata/stories260K.gguf --prompt-ids 1,403,407,261,378 --gen 48 \
       --full-logits --dtype float64 --out /tmp/ref/stories260K.f64.json --compare "$O/stories260K.json"
  step $PY $R/test_forward.py --tmp /tmp/ref
  echo "FAILED=$FAILED"
  exit $FAILED
} 2>&1 | tee "$O/log.txt"
