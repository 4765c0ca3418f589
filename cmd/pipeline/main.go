// Command pipeline runs, inspects and makes GGUF language models.
//
//	pipeline run --model M.gguf --prompt "Once upon a time"
//	pipeline tokenize --model M.gguf --text "Hello"
//	pipeline inspect --model M.gguf
//	pipeline gen-model --out synth.gguf --preset 1b --type q4_k
//	pipeline quantize --in M.f16.gguf --out M.q8_0.gguf --type q8_0
//	pipeline serve --model M.gguf --addr 127.0.0.1:8080
//	pipeline loadtest --url http://127.0.0.1:8080 --concurrency 8 --requests 100 --stream
package main

import (
	"os"
	"time"
)

// started is when the command began (package initialisation, a few
// milliseconds after the process's start): run --json counts its
// first_token_ms from here.
var started = time.Now()

func main() {
	os.Exit(execute(os.Args[1:]))
}
