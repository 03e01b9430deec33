package matcher

// Match is one verified occurrence of indexed content in a prompt: the
// prompt's tokens [ReqOff, ReqOff+Len) equal the indexed entry's tokens
// [ChunkOff, ChunkOff+Len).
//
// For a chunk match, Chunk is the chunk's key (ChunkKeyOf). Prefix is true
// for the prefix match: a run of whole prefix blocks from prompt offset 0,
// where Chunk is the key of the last matched block and the keys of all its
// blocks are PrefixKeys(salt, prompt[:Len], BlockSize) with the salt the
// entry was indexed under (the request's, or its Shared() salt when Shared
// is set).
type Match struct {
	ReqOff   int
	Len      int
	Chunk    ChunkKey
	ChunkOff int
	Prefix   bool
	// Shared is true when the matched entry was indexed under the shared
	// salt of the request's model rather than the request's own salt.
	Shared bool
}

// End returns the prompt offset just past the match.
func (m Match) End() int { return m.ReqOff + m.Len }
