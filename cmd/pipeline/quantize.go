package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/model/quantize"
)

func (a *app) quantizeCommand() *cobra.Command {
	var in, out, typeName string
	cmd := &cobra.Command{
		Use:   "quantize --in A.gguf --out B.gguf --type TYPE",
		Short: "Convert a model's weight matrices to another type (q8_0, q4_k, f16, ...)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := gguf.ParseType(typeName)
			if err != nil {
				return fmt.Errorf("--type: %w", err)
			}
			if _, err := quantize.FileType(t); err != nil {
				return fmt.Errorf("--type: %w", err)
			}
			if err := checkFile("in", in); err != nil {
				return err
			}
			if out == "" {
				return fmt.Errorf("--out: no path given")
			}
			start := time.Now()
			progress, done := a.progress("quantize")
			err = quantize.File(in, out, t, progress)
			done()
			if err != nil {
				return err
			}
			st, err := os.Stat(out)
			if err != nil {
				return err
			}
			a.log.Info().Str("out", out).Stringer("type", t).Int64("bytes", st.Size()).
				Dur("took_ms", time.Since(start)).Msg("model quantized")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&in, "in", "", "GGUF model to convert")
	f.StringVar(&out, "out", "", "path of the GGUF file to write")
	f.StringVar(&typeName, "type", "", "target type: q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, f16, bf16, f32")
	for _, name := range []string{"in", "out", "type"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}
