package model

// FindStop reports whether text contains one of the stop strings, and text
// cut before the earliest one. Generate ends a generation this way; the
// actor pipeline's sampler does the same.
func FindStop(text string, stops []string) (bool, string) { return findStop(text, stops) }

// HeldBack is the length of the longest suffix of text that is a proper
// prefix of a stop string: text that must not be streamed yet because it
// may still turn into a stop.
func HeldBack(text string, stops []string) int { return heldBack(text, stops) }
