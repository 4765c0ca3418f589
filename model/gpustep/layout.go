package gpustep

import (
	"slices"
	"strings"

	"github.com/forgepipe/forgepipe/gguf"
)

// TensorAlign is the alignment of each tensor in a layer's device
// allocation.
const TensorAlign = 256

// tensorRank orders a layer's tensors on the device so that the matrices
// one input feeds lie back to back (Q, K, V; gate, up): BindBlock finds
// them adjacent and a step of one row multiplies each group in one launch.
var tensorRank = map[string]int{"attn_norm.weight": 0, "attn_q.weight": 1, "attn_k.weight": 2, "attn_v.weight": 3,
	"attn_output.weight": 4, "ffn_norm.weight": 5, "ffn_gate.weight": 6, "ffn_up.weight": 7, "ffn_down.weight": 8}

func rankOf(name string) int {
	if i := strings.IndexByte(name, '.'); strings.HasPrefix(name, "blk.") && i >= 0 {
		rest := name[i+1:]
		if j := strings.IndexByte(rest, '.'); j >= 0 {
			if r, ok := tensorRank[rest[j+1:]]; ok {
				return r
			}
		}
	}
	return len(tensorRank)
}

// Layout orders a layer's tensors as they should lie in one device
// allocation (a sorted copy of ts) and gives each one's offset, every
// tensor TensorAlign-aligned, and the allocation's size.
func Layout(ts []*gguf.TensorInfo) (ordered []*gguf.TensorInfo, offsets []int64, size int64) {
	ordered = slices.Clone(ts)
	slices.SortStableFunc(ordered, func(x, y *gguf.TensorInfo) int { return rankOf(x.Name) - rankOf(y.Name) })
	for _, t := range ordered {
		size = (size + TensorAlign - 1) / TensorAlign * TensorAlign
		offsets = append(offsets, size)
		size += int64(t.Size)
	}
	return ordered, offsets, size
}
