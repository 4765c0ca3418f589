package main

// The GPU drivers register themselves with hip; "auto" tries them first.
import (
	_ "github.com/forgepipe/forgepipe/hip/cuda"
	_ "github.com/forgepipe/forgepipe/hip/rocm"
)
