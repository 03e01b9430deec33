//go:build !amd64 || purego

package kvcache

const haveRopeAVX512 = false

func (a *Angles) applyBF16Kernel(_, _ []byte, _ int) bool { return false }
