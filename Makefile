# forgepipe: the two commands a fresh machine needs are `make run` and `make test`.
GO        ?= go
BIN       := bin/pipeline
MODEL     ?= models/forgepipe-tiny.f16.gguf
PROMPT    ?= Prince Andrew
FUZZTIME  ?= 30s
export CGO_ENABLED := 0

.PHONY: all build run test unit openai-test fuzz bench vet amd-check clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/pipeline

# Build the binary and generate text from the bundled model.
run: build
	./$(BIN) run --model $(MODEL) --prompt "$(PROMPT)" --max-tokens 64 --temperature 0.8 --seed 1

# Everything CI runs: vet, the whole test suite, the openai npm client against
# the server, the AMD compile check of the GPU kernels, then a short fuzz of
# the GGUF parser.
test: vet unit openai-test amd-check fuzz

vet:
	$(GO) vet ./...

unit:
	$(GO) test -count=1 -timeout 30m ./...

# The official openai npm client against `pipeline serve`'s API (tests/openai);
# installs the pinned package from the npm registry when it is missing.
openai-test:
	@test -f tests/openai/node_modules/openai/package.json || npm ci --prefix tests/openai --no-audit --no-fund
	FORGEPIPE_NODE_TEST=1 $(GO) test -count=1 -run '^TestOpenAINodeClient$$' ./tests/openai

# Every GPU kernel source compiles for AMD, warning-free: CDNA (gfx90a, wave
# 64) and RDNA (gfx1030, wave 32), with Debian's hipcc (installed here if
# missing; .ci/run installs it). The sources are written once for NVIDIA and
# AMD (kernels/gpu/src/compat.h) and compiled as the drivers see them: one
# translation unit (kernels/gpu.Source), by TestHipccCompilesModule.
HIPCC     ?= hipcc
amd-check:
	@command -v $(HIPCC) >/dev/null || { echo "amd-check: installing Debian's hipcc" >&2; apt-get update -qq && apt-get install -y -qq hipcc; } \
		|| { echo "amd-check: $(HIPCC) not found and could not be installed (apt-get install hipcc)" >&2; exit 1; }
	FORGEPIPE_REQUIRE_HIPCC=1 $(GO) test -count=1 -run '^TestHipccCompilesModule$$' -v ./kernels/gpu

fuzz:
	$(GO) test ./gguf -run '^$$' -fuzz '^FuzzParseHeader$$' -fuzztime $(FUZZTIME)

bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x ./...

clean:
	rm -rf bin
