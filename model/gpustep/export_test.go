package gpustep

import "strings"

// SkipKernels sets skip from a comma-separated list (empty: none), for
// BenchmarkDecodeDirect's FORGEPIPE_SKIP.
func SkipKernels(list string) {
	skip = nil
	for _, k := range strings.Split(list, ",") {
		if k = strings.TrimSpace(k); k != "" {
			if skip == nil {
				skip = map[string]bool{}
			}
			skip[k] = true
		}
	}
}
