package matcher

import (
	"slices"
	"sort"
)

// coverValue is what Cover maximises, compared field by field.
type coverValue struct {
	tokens int // reused tokens
	prefix int // tokens reused through the prefix match
	count  int // number of picks, fewer is better
}

func (a coverValue) better(b coverValue) bool {
	if a.tokens != b.tokens {
		return a.tokens > b.tokens
	}
	if a.prefix != b.prefix {
		return a.prefix > b.prefix
	}
	return a.count < b.count
}

// Cover picks non-overlapping matches (as half-open prompt intervals)
// that maximise, in order: the reused tokens; the tokens reused through
// the prefix match ("prefix first"); fewer, hence longer, picks ("then
// longest"); and finally the lexicographically smallest list of picks in
// CompareMatches order. It returns them in that order. The choice is exact
// (weighted interval scheduling by dynamic programming, O(m log m)).
// Matches are used whole, never trimmed. Empty or negative-length matches
// are ignored.
func Cover(matches []Match) []Match {
	ms := slices.DeleteFunc(slices.Clone(matches), func(m Match) bool { return m.Len <= 0 })
	slices.SortFunc(ms, CompareMatches)
	// CompareMatches sorts the prefix match (ReqOff 0) first and then by
	// ReqOff, so ms is sorted by start as the recurrence needs.
	n := len(ms)
	if n == 0 {
		return nil
	}
	next := make([]int, n)
	for i, m := range ms {
		end := m.End()
		next[i] = i + 1 + sort.Search(n-i-1, func(j int) bool { return ms[i+1+j].ReqOff >= end })
	}
	// best[i] is the optimum over ms[i:]; take[i] whether it picks ms[i].
	best := make([]coverValue, n+1)
	take := make([]bool, n)
	for i := n - 1; i >= 0; i-- {
		m := ms[i]
		with := best[next[i]]
		with.tokens += m.Len
		with.count++
		if m.Prefix {
			with.prefix += m.Len
		}
		// On a full tie taking ms[i] yields the lexicographically smaller
		// list, because the alternative starts with a later match.
		if !best[i+1].better(with) {
			best[i], take[i] = with, true
		} else {
			best[i] = best[i+1]
		}
	}
	var out []Match
	for i := 0; i < n; {
		if take[i] {
			out = append(out, ms[i])
			i = next[i]
		} else {
			i++
		}
	}
	return out
}

// Reused returns the total length of matches (of a Cover: the reused
// tokens).
func Reused(matches []Match) int {
	n := 0
	for _, m := range matches {
		n += m.Len
	}
	return n
}
