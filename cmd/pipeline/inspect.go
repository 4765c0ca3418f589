package main

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/forgepipe/forgepipe/gguf"
)

// arrayHead is how many elements of a long metadata array are shown.
const arrayHead = 5

// longString is the length past which metadata strings are cut in the text
// listing (chat templates, licences).
const longString = 100

// inspectReport is what inspect prints; it is also the --json schema.
type inspectReport struct {
	Path       string           `json:"path"`
	Version    uint32           `json:"version"`
	Alignment  uint64           `json:"alignment"`
	DataOffset uint64           `json:"data_offset"`
	Size       int64            `json:"size"`
	Metadata   []inspectKV      `json:"metadata"`
	Tensors    []inspectTensor  `json:"tensors"`
	Totals     []inspectTypeSum `json:"totals"`
}

// inspectKV is one metadata entry. Arrays longer than arrayHead*2 elements
// are summarised: Len is their length and Value their first elements.
type inspectKV struct {
	Key       string `json:"key"`
	Type      string `json:"type"`
	Elem      string `json:"elem,omitempty"`
	Len       int    `json:"len,omitempty"`
	Value     any    `json:"value"`
	Truncated bool   `json:"truncated,omitempty"`
}

type inspectTensor struct {
	Name   string   `json:"name"`
	Type   string   `json:"type"`
	Shape  []uint64 `json:"shape"`
	Bytes  uint64   `json:"bytes"`
	Offset uint64   `json:"offset"`
}

type inspectTypeSum struct {
	Type     string `json:"type"`
	Tensors  int    `json:"tensors"`
	Elements uint64 `json:"elements"`
	Bytes    uint64 `json:"bytes"`
}

func (a *app) inspectCommand() *cobra.Command {
	var (
		path   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "inspect --model PATH",
		Short: "Print a GGUF file's version, metadata and tensor table",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFile("model", path); err != nil {
				return err
			}
			f, err := gguf.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			rep := buildInspectReport(f)
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				enc.SetEscapeHTML(false)
				return enc.Encode(rep)
			}
			return rep.writeText(a.stdout)
		},
	}
	cmd.Flags().StringVar(&path, "model", "", "GGUF file to inspect (models and vocabulary-only files)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	_ = cmd.MarkFlagRequired("model")
	return cmd
}

func buildInspectReport(f *gguf.File) *inspectReport {
	rep := &inspectReport{
		Path: f.Path, Version: f.Version, Alignment: f.Alignment,
		DataOffset: f.DataOffset, Size: f.Size(),
		Metadata: make([]inspectKV, 0, len(f.Metadata.KVs)),
		Tensors:  make([]inspectTensor, 0, len(f.Tensors)),
		Totals:   []inspectTypeSum{},
	}
	for _, kv := range f.Metadata.KVs {
		rep.Metadata = append(rep.Metadata, summariseKV(kv))
	}
	sums := map[gguf.Type]*inspectTypeSum{}
	for _, t := range f.Tensors {
		rep.Tensors = append(rep.Tensors, inspectTensor{
			Name: t.Name, Type: t.Type.String(), Shape: t.Shape, Bytes: t.Size, Offset: t.Offset,
		})
		s, ok := sums[t.Type]
		if !ok {
			s = &inspectTypeSum{Type: t.Type.String()}
			sums[t.Type] = s
		}
		s.Tensors++
		s.Elements += t.Elements()
		s.Bytes += t.Size
	}
	types := make([]gguf.Type, 0, len(sums))
	for t := range sums {
		types = append(types, t)
	}
	sort.Slice(types, func(i, j int) bool { return types[i] < types[j] })
	for _, t := range types {
		rep.Totals = append(rep.Totals, *sums[t])
	}
	return rep
}

// summariseKV turns a metadata entry into its report form, keeping only the
// first elements of a long array.
func summariseKV(kv gguf.KV) inspectKV {
	out := inspectKV{Key: kv.Key, Type: kv.Type.String(), Value: kv.Value}
	arr, ok := kv.Value.(gguf.Array)
	if !ok {
		return out
	}
	out.Elem = arr.Elem.String()
	out.Len = arr.Len()
	values := reflect.ValueOf(arr.Values)
	if values.Kind() != reflect.Slice {
		out.Value = []any{}
		return out
	}
	n := values.Len()
	if n > 2*arrayHead {
		n = arrayHead
		out.Truncated = true
	}
	head := make([]any, n)
	for i := range head {
		head[i] = values.Index(i).Interface()
	}
	out.Value = head
	return out
}

func (r *inspectReport) writeText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "file\t%s\n", r.Path)
	fmt.Fprintf(tw, "gguf version\t%d\n", r.Version)
	fmt.Fprintf(tw, "size\t%d bytes (data at %d, alignment %d)\n", r.Size, r.DataOffset, r.Alignment)
	fmt.Fprintf(tw, "\nmetadata (%d keys)\n", len(r.Metadata))
	for _, kv := range r.Metadata {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", kv.Key, kvTypeText(kv), kvValueText(kv))
	}
	fmt.Fprintf(tw, "\ntensors (%d)\n", len(r.Tensors))
	if len(r.Tensors) > 0 {
		fmt.Fprintf(tw, "  name\ttype\tshape\tbytes\toffset\n")
	}
	for _, t := range r.Tensors {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\n", t.Name, t.Type, shapeText(t.Shape), t.Bytes, t.Offset)
	}
	if len(r.Totals) > 0 {
		fmt.Fprintf(tw, "\ntotals\n  type\ttensors\telements\tbytes\n")
		var n int
		var elems, bytes uint64
		for _, s := range r.Totals {
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\n", s.Type, s.Tensors, s.Elements, s.Bytes)
			n += s.Tensors
			elems += s.Elements
			bytes += s.Bytes
		}
		fmt.Fprintf(tw, "  all\t%d\t%d\t%d\n", n, elems, bytes)
	}
	return tw.Flush()
}

func kvTypeText(kv inspectKV) string {
	if kv.Elem != "" {
		return fmt.Sprintf("[%s; %d]", kv.Elem, kv.Len)
	}
	return kv.Type
}

func kvValueText(kv inspectKV) string {
	if kv.Elem == "" {
		return scalarText(kv.Value)
	}
	head := kv.Value.([]any)
	parts := make([]string, len(head))
	for i, v := range head {
		parts[i] = scalarText(v)
	}
	s := "[" + strings.Join(parts, ", ")
	if kv.Truncated {
		s += fmt.Sprintf(", ... %d more", kv.Len-len(head))
	}
	return s + "]"
}

func scalarText(v any) string {
	switch x := v.(type) {
	case string:
		if len(x) > longString {
			return fmt.Sprintf("%q... (%d bytes)", x[:longString], len(x))
		}
		return fmt.Sprintf("%q", x)
	case gguf.Array:
		return fmt.Sprintf("[%s; %d]", x.Elem, x.Len())
	}
	return fmt.Sprint(v)
}

func shapeText(shape []uint64) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
