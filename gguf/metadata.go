package gguf

import (
	"fmt"
	"math"
)

// ValueType is the type tag of a GGUF metadata value.
type ValueType uint32

// GGUF metadata value types.
const (
	ValueUint8   ValueType = 0
	ValueInt8    ValueType = 1
	ValueUint16  ValueType = 2
	ValueInt16   ValueType = 3
	ValueUint32  ValueType = 4
	ValueInt32   ValueType = 5
	ValueFloat32 ValueType = 6
	ValueBool    ValueType = 7
	ValueString  ValueType = 8
	ValueArray   ValueType = 9
	ValueUint64  ValueType = 10
	ValueInt64   ValueType = 11
	ValueFloat64 ValueType = 12
)

var valueTypeNames = [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"}

func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("valuetype(%d)", uint32(t))
}

// size is the encoded size of a scalar of this type; 0 for string and array.
func (t ValueType) size() int {
	switch t {
	case ValueUint8, ValueInt8, ValueBool:
		return 1
	case ValueUint16, ValueInt16:
		return 2
	case ValueUint32, ValueInt32, ValueFloat32:
		return 4
	case ValueUint64, ValueInt64, ValueFloat64:
		return 8
	}
	return 0
}

// Array is a GGUF array value. Values holds a typed slice: []uint8, []int8,
// []uint16, []int16, []uint32, []int32, []float32, []bool, []string,
// []uint64, []int64, []float64, or []Array for arrays of arrays.
type Array struct {
	Elem   ValueType
	Values any
}

// Len is the number of elements.
func (a Array) Len() int {
	switch v := a.Values.(type) {
	case []uint8:
		return len(v)
	case []int8:
		return len(v)
	case []uint16:
		return len(v)
	case []int16:
		return len(v)
	case []uint32:
		return len(v)
	case []int32:
		return len(v)
	case []float32:
		return len(v)
	case []bool:
		return len(v)
	case []string:
		return len(v)
	case []uint64:
		return len(v)
	case []int64:
		return len(v)
	case []float64:
		return len(v)
	case []Array:
		return len(v)
	}
	return 0
}

// KV is one metadata entry. Value is uint8, int8, uint16, int16, uint32,
// int32, float32, bool, string, uint64, int64, float64 or Array.
type KV struct {
	Key   string
	Type  ValueType
	Value any
}

// Metadata is the ordered list of a file's key/value pairs with typed
// accessors. Accessors coerce between integer widths and between float
// widths, never between kinds.
type Metadata struct {
	KVs   []KV
	index map[string]int
}

func newMetadata(kvs []KV) *Metadata {
	m := &Metadata{KVs: kvs, index: make(map[string]int, len(kvs))}
	for i, kv := range kvs {
		m.index[kv.Key] = i
	}
	return m
}

// Get returns the raw entry for key.
func (m *Metadata) Get(key string) (KV, bool) {
	if m == nil {
		return KV{}, false
	}
	i, ok := m.index[key]
	if !ok {
		return KV{}, false
	}
	return m.KVs[i], true
}

// Has reports whether key is present.
func (m *Metadata) Has(key string) bool { _, ok := m.Get(key); return ok }

// String returns a string value.
func (m *Metadata) String(key string) (string, bool) {
	kv, ok := m.Get(key)
	if !ok {
		return "", false
	}
	s, ok := kv.Value.(string)
	return s, ok
}

// Uint returns a non-negative integer value of any width.
func (m *Metadata) Uint(key string) (uint64, bool) {
	kv, ok := m.Get(key)
	if !ok {
		return 0, false
	}
	i, ok := toInt64(kv.Value)
	if !ok || i < 0 {
		if u, isU := kv.Value.(uint64); isU {
			return u, true
		}
		return 0, false
	}
	return uint64(i), true
}

// Int returns an integer value of any width.
func (m *Metadata) Int(key string) (int64, bool) {
	kv, ok := m.Get(key)
	if !ok {
		return 0, false
	}
	return toInt64(kv.Value)
}

func toInt64(v any) (int64, bool) {
	switch x := v.(type) {
	case uint8:
		return int64(x), true
	case int8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case int16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case int32:
		return int64(x), true
	case uint64:
		if x > math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	case int64:
		return x, true
	}
	return 0, false
}

// Float returns a float32 or float64 value as float64.
func (m *Metadata) Float(key string) (float64, bool) {
	kv, ok := m.Get(key)
	if !ok {
		return 0, false
	}
	switch x := kv.Value.(type) {
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

// Bool returns a bool value.
func (m *Metadata) Bool(key string) (bool, bool) {
	kv, ok := m.Get(key)
	if !ok {
		return false, false
	}
	b, ok := kv.Value.(bool)
	return b, ok
}

// Array returns an array value.
func (m *Metadata) Array(key string) (Array, bool) {
	kv, ok := m.Get(key)
	if !ok {
		return Array{}, false
	}
	a, ok := kv.Value.(Array)
	return a, ok
}

// Strings returns an array of strings.
func (m *Metadata) Strings(key string) ([]string, bool) {
	a, ok := m.Array(key)
	if !ok {
		return nil, false
	}
	s, ok := a.Values.([]string)
	return s, ok
}

// Float32s returns an array of float32 (float64 arrays are narrowed).
func (m *Metadata) Float32s(key string) ([]float32, bool) {
	a, ok := m.Array(key)
	if !ok {
		return nil, false
	}
	switch v := a.Values.(type) {
	case []float32:
		return v, true
	case []float64:
		out := make([]float32, len(v))
		for i, x := range v {
			out[i] = float32(x)
		}
		return out, true
	}
	return nil, false
}

// Int32s returns an array of integers of any width as int32, failing if a
// value does not fit.
func (m *Metadata) Int32s(key string) ([]int32, bool) {
	a, ok := m.Array(key)
	if !ok {
		return nil, false
	}
	if v, ok := a.Values.([]int32); ok {
		return v, true
	}
	n := a.Len()
	out := make([]int32, n)
	for i := 0; i < n; i++ {
		x, ok := toInt64(indexAny(a.Values, i))
		if !ok || x < math.MinInt32 || x > math.MaxInt32 {
			return nil, false
		}
		out[i] = int32(x)
	}
	return out, true
}

func indexAny(values any, i int) any {
	switch v := values.(type) {
	case []uint8:
		return v[i]
	case []int8:
		return v[i]
	case []uint16:
		return v[i]
	case []int16:
		return v[i]
	case []uint32:
		return v[i]
	case []int32:
		return v[i]
	case []uint64:
		return v[i]
	case []int64:
		return v[i]
	}
	return nil
}
