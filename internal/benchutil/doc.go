// Package benchutil reports benchmark figures as ratios against a baseline
// measured in the same run, so that the numbers the issues name (for example
// "≥ 70% of copy() bandwidth") do not depend on how fast the machine is.
//
// It is imported only by _test.go files. It must not import any kvloom package.
package benchutil
