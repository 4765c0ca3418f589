package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/model/synth"
)

func (a *app) genModelCommand() *cobra.Command {
	var (
		out, arch, preset, typeName, vocabFrom, name string
		dim, layers, heads, kvHeads, ffn, ctx        int
		seed                                         uint64
	)
	cmd := &cobra.Command{
		Use:   "gen-model --out PATH",
		Short: "Write a synthetic llama or qwen2 model with random weights",
		Long: `Write a synthetic model: the tensors and metadata of a llama or qwen2 model
with random weights, deterministic for a seed. The shape comes from --preset
(tiny, 1b, 8b) with any of --dim, --layers, --heads, --kv-heads, --ffn, --ctx
overriding it; the tokenizer is copied from --vocab-from.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, err := synth.Preset(preset)
			if err != nil {
				return fmt.Errorf("--preset: %w", err)
			}
			spec.Arch, spec.Name, spec.Seed = arch, name, seed
			if spec.Type, err = gguf.ParseType(typeName); err != nil {
				return fmt.Errorf("--type: %w", err)
			}
			flags := cmd.Flags()
			for _, o := range []struct {
				flag string
				val  int
				dst  *int
			}{
				{"dim", dim, &spec.Dim}, {"layers", layers, &spec.Layers}, {"heads", heads, &spec.Heads},
				{"kv-heads", kvHeads, &spec.KVHeads}, {"ffn", ffn, &spec.FFN}, {"ctx", ctx, &spec.Context},
			} {
				if flags.Changed(o.flag) {
					*o.dst = o.val
				}
			}
			if vocabFrom == "" {
				if vocabFrom, err = findBundledModel(); err != nil {
					return err
				}
			} else if err := checkFile("vocab-from", vocabFrom); err != nil {
				return err
			}
			if spec.Tokenizer, err = synth.TokenizerFrom(vocabFrom); err != nil {
				return fmt.Errorf("--vocab-from: %w", err)
			}
			if err := spec.Validate(); err != nil {
				return err
			}
			if out == "" {
				return fmt.Errorf("--out: no path given")
			}

			a.log.Info().Str("arch", spec.Arch).Int("dim", spec.Dim).Int("layers", spec.Layers).
				Int("heads", spec.Heads).Int("kv_heads", spec.KVHeads).Int("ffn", spec.FFN).
				Int("vocab", spec.VocabSize()).Stringer("type", spec.Type).Uint64("seed", spec.Seed).
				Int64("params", spec.Params()).Str("vocab_from", vocabFrom).Msg("generating model")
			start := time.Now()
			progress, done := a.progress("gen-model")
			err = synth.Write(out, spec, progress)
			done()
			if err != nil {
				return err
			}
			st, err := os.Stat(out)
			if err != nil {
				return err
			}
			a.log.Info().Str("out", out).Int64("bytes", st.Size()).Dur("took_ms", time.Since(start)).Msg("model written")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "path of the GGUF file to write")
	f.StringVar(&arch, "arch", "llama", "architecture: "+strings.Join(synth.Architectures, ", "))
	f.StringVar(&preset, "preset", "tiny", "shape preset: "+strings.Join(synth.Presets(), ", "))
	f.IntVar(&dim, "dim", 0, "embedding width (overrides the preset)")
	f.IntVar(&layers, "layers", 0, "number of blocks (overrides the preset)")
	f.IntVar(&heads, "heads", 0, "attention heads (overrides the preset)")
	f.IntVar(&kvHeads, "kv-heads", 0, "key/value heads (overrides the preset)")
	f.IntVar(&ffn, "ffn", 0, "feed-forward width (overrides the preset)")
	f.IntVar(&ctx, "ctx", 0, "context length written to the metadata (overrides the preset)")
	f.StringVar(&vocabFrom, "vocab-from", "", "GGUF whose tokenizer is copied (default: the bundled "+bundledModelName+")")
	f.StringVar(&typeName, "type", "f16", "type of the weight matrices: f32, f16, bf16, q8_0, q4_0, q4_k, q6_k, ...")
	f.Uint64Var(&seed, "seed", 1, "random seed; the same seed writes the same file")
	f.StringVar(&name, "name", "", "general.name (default synthetic-<arch>)")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}
