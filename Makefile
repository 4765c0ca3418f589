# forgepipe: the two commands a fresh machine needs are `make run` and `make test`.
GO        ?= go
BIN       := bin/pipeline
MODEL     ?= models/forgepipe-tiny.f16.gguf
PROMPT    ?= Prince Andrew
FUZZTIME  ?= 30s
export CGO_ENABLED := 0

.PHONY: all build run test unit openai-test fuzz bench vet clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/pipeline

# Build the binary and generate text from the bundled model.
run: build
	./$(BIN) run --model $(MODEL) --prompt "$(PROMPT)" --max-tokens 64 --temperature 0.8 --seed 1

# Everything CI runs: vet, the whole test suite, the openai npm client against
# the server, then a short fuzz of the GGUF parser.
test: vet unit openai-test fuzz

vet:
	$(GO) vet ./...

unit:
	$(GO) test -count=1 -timeout 30m ./...

# The official openai npm client against `pipeline serve`'s API (tests/openai);
# installs the pinned package from the npm registry when it is missing.
openai-test:
	@test -f tests/openai/node_modules/openai/package.json || npm ci --prefix tests/openai --no-audit --no-fund
	FORGEPIPE_NODE_TEST=1 $(GO) test -count=1 -run '^TestOpenAINodeClient$$' ./tests/openai

fuzz:
	$(GO) test ./gguf -run '^$$' -fuzz '^FuzzParseHeader$$' -fuzztime $(FUZZTIME)

bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x ./...

clean:
	rm -rf bin
