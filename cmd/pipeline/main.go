// Command pipeline runs, inspects and makes GGUF language models.
//
//	pipeline run --model M.gguf --prompt "Once upon a time"
//	pipeline tokenize --model M.gguf --text "Hello"
//	pipeline inspect --model M.gguf
//	pipeline gen-model --out synth.gguf --preset 1b --type q4_k
//	pipeline quantize --in M.f16.gguf --out M.q8_0.gguf --type q8_0
package main

import "os"

func main() {
	os.Exit(execute(os.Args[1:]))
}
