// Package matcher owns token-chunk identity and matching: the hashing
// contract (docs/hashing.md) for salted 128-bit prefix-block and
// position-independent chunk keys (and Dynamo-compatible block hashes for
// interoperability), content-defined anchors (winnowing over k-gram
// fingerprints), the chunk Index, exact substring matching of prompts
// against it (FindAll) and the choice of what to reuse (Cover), and the
// hot-substring sketch (Hot) that proposes what an accelerator's table
// should hold.
//
// Every match it reports has been verified token by token: hashes only find
// candidates. It is the oracle every device backend is tested against: a
// device holding a subset of the entries must return what FindAll returns on
// an Index built from that subset (Index.Entries enumerates a snapshot).
//
// Concurrency: an Index serves any number of readers without locks (they
// load an immutable snapshot) while writers, serialised on a mutex, publish
// copy-on-write snapshots. Hot is guarded by a mutex.
//
// matcher imports only the standard library and github.com/zeebo/xxh3; it
// must not import any other kvloom package. Errors wrap the sentinels of
// errors.go: ErrSaltSize, ErrZeroSalt, ErrEmptyTenant, ErrBadKey,
// ErrBlockSize, ErrOptions, ErrEmpty, ErrTooLong, ErrTooShort,
// ErrTokenRange, ErrTooManyCandidates.
package matcher
