package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/tokenizer"
)

func (a *app) tokenizeCommand() *cobra.Command {
	var (
		path, text        string
		noSpecial, asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "tokenize --model PATH --text TEXT",
		Short: "Print the token ids of a text (works on vocabulary-only GGUF files)",
		Long: `Print the token ids of a text, space separated on one line.
By default BOS/EOS are added as the vocabulary asks and special-token text
(such as <|eos|>) becomes its token; --no-special does neither, as
llama.cpp's tokenizer test vectors are made.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFile("model", path); err != nil {
				return err
			}
			f, err := gguf.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			tok, err := tokenizer.FromGGUF(f.Metadata)
			if err != nil {
				return fmt.Errorf("%s: tokenizer: %w", path, err)
			}
			ids := tok.Encode(text, !noSpecial, !noSpecial)
			if ids == nil {
				ids = []int32{}
			}
			if asJSON {
				return json.NewEncoder(a.stdout).Encode(struct {
					IDs []int32 `json:"ids"`
				}{ids})
			}
			parts := make([]string, len(ids))
			for i, id := range ids {
				parts[i] = strconv.Itoa(int(id))
			}
			_, err = fmt.Fprintln(a.stdout, strings.Join(parts, " "))
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&path, "model", "", "GGUF file with the tokenizer (a model or a vocabulary-only file)")
	f.StringVar(&text, "text", "", "text to tokenize")
	f.BoolVar(&noSpecial, "no-special", false, "add no BOS/EOS and treat special-token text as plain text")
	f.BoolVar(&asJSON, "json", false, `print {"ids": [...]}`)
	_ = cmd.MarkFlagRequired("model")
	_ = cmd.MarkFlagRequired("text")
	return cmd
}
