package matcher

// Match is one verified occurrence of indexed content in a prompt: the
// prompt's tokens [ReqOff, ReqOff+Len) equal the indexed chunk's tokens
// [ChunkOff, ChunkOff+Len). Prefix is true when the match is a run of prefix
// blocks starting at prompt offset 0.
type Match struct {
	ReqOff   int
	Len      int
	Chunk    ChunkKey
	ChunkOff int
	Prefix   bool
}

// End returns the prompt offset just past the match.
func (m Match) End() int { return m.ReqOff + m.Len }
