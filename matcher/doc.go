// Package matcher owns token-chunk identity and matching: the hashing
// contract (docs/hashing.md) for salted 128-bit prefix-block and
// position-independent chunk keys, the chunk index, exact substring matching
// of prompts against it (FindAll and Cover), and the hot-substring sketch
// that proposes what the accelerator's table should hold.
//
// Every match it reports has been verified token by token: hashes only find
// candidates. It is the oracle every device backend is tested against.
//
// matcher imports only the standard library and hash libraries; it must not
// import any other kvloom package.
package matcher
