package quantize

import (
	"fmt"

	"github.com/forgepipe/forgepipe/gguf"
)

// fileTypes maps a tensor type to llama.cpp's LLAMA_FTYPE number for a file
// whose matrices are all of that type (the general.file_type key). For the
// k-quants, which llama.cpp only offers as S/M mixes, the "S" number is used:
// it is the mix closest to a uniform file.
var fileTypes = map[gguf.Type]uint32{
	gguf.TypeF32:  0,  // LLAMA_FTYPE_ALL_F32
	gguf.TypeF16:  1,  // LLAMA_FTYPE_MOSTLY_F16
	gguf.TypeQ4_0: 2,  // LLAMA_FTYPE_MOSTLY_Q4_0
	gguf.TypeQ4_1: 3,  // LLAMA_FTYPE_MOSTLY_Q4_1
	gguf.TypeQ8_0: 7,  // LLAMA_FTYPE_MOSTLY_Q8_0
	gguf.TypeQ5_0: 8,  // LLAMA_FTYPE_MOSTLY_Q5_0
	gguf.TypeQ5_1: 9,  // LLAMA_FTYPE_MOSTLY_Q5_1
	gguf.TypeQ2_K: 10, // LLAMA_FTYPE_MOSTLY_Q2_K
	gguf.TypeQ3_K: 11, // LLAMA_FTYPE_MOSTLY_Q3_K_S
	gguf.TypeQ4_K: 14, // LLAMA_FTYPE_MOSTLY_Q4_K_S
	gguf.TypeQ5_K: 16, // LLAMA_FTYPE_MOSTLY_Q5_K_S
	gguf.TypeQ6_K: 18, // LLAMA_FTYPE_MOSTLY_Q6_K
	gguf.TypeBF16: 32, // LLAMA_FTYPE_MOSTLY_BF16
}

// FileType returns llama.cpp's LLAMA_FTYPE number (general.file_type) for a
// file whose weight matrices are of type t. Types that are not a llama.cpp
// file type (Q8_K, the IQ types, integers) give an error.
func FileType(t gguf.Type) (uint32, error) {
	ft, ok := fileTypes[t]
	if !ok {
		return 0, fmt.Errorf("%s is not a model file type (want one of %s)", t, typeList())
	}
	return ft, nil
}

// Targets lists the types a model can be converted to, in ggml's order.
func Targets() []gguf.Type {
	out := make([]gguf.Type, 0, len(fileTypes))
	for t := gguf.Type(0); t <= gguf.TypeBF16; t++ {
		if _, ok := fileTypes[t]; ok {
			out = append(out, t)
		}
	}
	return out
}

func typeList() string {
	s := ""
	for i, t := range Targets() {
		if i > 0 {
			s += ", "
		}
		s += t.String()
	}
	return s
}

// ForRow returns the type a matrix whose rows hold n elements is stored in
// when t is asked for. It is t itself when n is a multiple of t's block size;
// otherwise it follows llama.cpp's fallback (llama-quant.cpp): Q4_K becomes
// Q5_0, Q5_K becomes Q5_1, Q6_K becomes Q8_0, and Q2_K/Q3_K become Q4_0
// (llama.cpp picks IQ4_NL, which this engine does not compute with); when the
// fallback's 32-element blocks still do not fit, or t is a legacy type, F16.
func ForRow(t gguf.Type, n int) gguf.Type {
	if n%t.BlockSize() == 0 {
		return t
	}
	fallback := gguf.TypeF16
	switch t {
	case gguf.TypeQ2_K, gguf.TypeQ3_K:
		fallback = gguf.TypeQ4_0
	case gguf.TypeQ4_K:
		fallback = gguf.TypeQ5_0
	case gguf.TypeQ5_K:
		fallback = gguf.TypeQ5_1
	case gguf.TypeQ6_K:
		fallback = gguf.TypeQ8_0
	}
	if n%fallback.BlockSize() != 0 {
		return gguf.TypeF16
	}
	return fallback
}
