// Package layering holds the test that keeps DESIGN.md's package table true:
// every kvloom package may import only the kvloom packages listed for it.
// It has no non-test code.
package layering
