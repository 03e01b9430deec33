package matcher

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/zeebo/xxh3"
)

// The hashing contract (docs/hashing.md). Every constant here is part of it:
// changing one changes every key, and the pinned vectors in testdata/ fail.
const (
	// seedPrefixChain keys the chaining step of prefix block keys.
	seedPrefixChain = 0x6b766c6f6f6d5001 // "kvloomP\x01"
	// seedChunk keys the final step of position-independent chunk keys.
	seedChunk = 0x6b766c6f6f6d4301 // "kvloomC\x01"
)

// Prefix block sizes the contract allows.
const (
	DefaultBlockSize = 256
	MinBlockSize     = 16
	MaxBlockSize     = 1024
)

// Dynamo interoperability constants: NVIDIA Dynamo's KV router hashes each
// full block of kv_block_size tokens with XXH3-64 and this seed.
const (
	DynamoSeed      = 1337
	DynamoBlockSize = 16
)

// hostLittleEndian is true where a []Token's memory already is the
// little-endian encoding the contract hashes, so no copy is needed.
var hostLittleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// tokenBytes returns the little-endian encoding of toks. On little-endian
// hosts it aliases toks' memory (no copy, no allocation); elsewhere it
// encodes into scratch, growing it as needed.
func tokenBytes(toks []Token, scratch *[]byte) []byte {
	if len(toks) == 0 {
		return nil
	}
	if hostLittleEndian {
		return unsafe.Slice((*byte)(unsafe.Pointer(&toks[0])), 4*len(toks))
	}
	b := (*scratch)[:0]
	for _, t := range toks {
		b = binary.LittleEndian.AppendUint32(b, t)
	}
	*scratch = b
	return b
}

// digest is XXH3-128 (seed 0) of the tokens' little-endian bytes, in the
// canonical big-endian byte order of XXH128.
func digest(toks []Token) [16]byte {
	var scratch []byte
	return xxh3.Hash128(tokenBytes(toks, &scratch)).Bytes()
}

// putU128 writes u in XXH128's canonical byte order.
func putU128(b []byte, u xxh3.Uint128) {
	binary.BigEndian.PutUint64(b[0:8], u.Hi)
	binary.BigEndian.PutUint64(b[8:16], u.Lo)
}

// chainStep computes one prefix block key. in holds salt ‖ parent ‖ (room
// for the digest); on return in[16:32] holds the new key, ready for the
// next block.
func chainStep(in *[48]byte, block []Token, scratch *[]byte) {
	putU128(in[32:48], xxh3.Hash128(tokenBytes(block, scratch)))
	putU128(in[16:32], xxh3.Hash128Seed(in[:], seedPrefixChain))
}

// PrefixBlockKey returns the key of one prefix block given its parent's key:
// key_i = XXH3-128(salt ‖ key_{i-1} ‖ XXH3-128(le32(block_i)), seedPrefixChain),
// with the zero key as the parent of the first block. The block's length is
// the caller's business (PrefixKeys enforces a block size).
func PrefixBlockKey(salt Salt, parent ChunkKey, block []Token) ChunkKey {
	var in [48]byte
	copy(in[0:8], salt.Model[:])
	copy(in[8:16], salt.Tenant[:])
	copy(in[16:32], parent[:])
	var scratch []byte
	chainStep(&in, block, &scratch)
	return ChunkKey(in[16:32])
}

// CheckBlockSize reports whether n is an allowed prefix block size.
func CheckBlockSize(n int) error {
	if n < MinBlockSize || n > MaxBlockSize {
		return fmt.Errorf("prefix block size %d outside [%d, %d]: %w", n, MinBlockSize, MaxBlockSize, ErrBlockSize)
	}
	return nil
}

// PrefixKeys appends to dst the chained keys of every full block of
// blockSize tokens in toks (a trailing partial block has no key). Key i
// identifies the KV of block i given everything before it.
func PrefixKeys(salt Salt, toks []Token, blockSize int, dst []ChunkKey) ([]ChunkKey, error) {
	if err := CheckBlockSize(blockSize); err != nil {
		return dst, err
	}
	var in [48]byte // salt ‖ parent ‖ digest, reused across blocks
	copy(in[0:8], salt.Model[:])
	copy(in[8:16], salt.Tenant[:])
	var scratch []byte
	for off := 0; off+blockSize <= len(toks); off += blockSize {
		chainStep(&in, toks[off:off+blockSize], &scratch)
		dst = append(dst, ChunkKey(in[16:32]))
	}
	return dst, nil
}

// ChunkKeyOf returns the position-independent key of a chunk:
// XXH3-128(salt ‖ le64(len) ‖ XXH3-128(le32(toks)), seedChunk). It depends on
// the salt and the tokens only, never on where the chunk sits in a prompt.
func ChunkKeyOf(salt Salt, toks []Token) ChunkKey {
	var in [40]byte
	s := salt.Bytes()
	copy(in[0:16], s[:])
	binary.LittleEndian.PutUint64(in[16:24], uint64(len(toks)))
	d := digest(toks)
	copy(in[24:40], d[:])
	return xxh3.Hash128Seed(in[:], seedChunk).Bytes()
}

// DynamoBlockHashes appends to dst NVIDIA Dynamo's local block hash of every
// full block of blockSize tokens (DynamoBlockSize in Dynamo's examples):
// XXH3-64 of the block's little-endian uint32 tokens with seed DynamoSeed.
// These hashes are unsalted and 64-bit; they exist to interoperate with
// Dynamo's router and KV events, not as kvloom keys.
func DynamoBlockHashes(toks []Token, blockSize int, dst []uint64) []uint64 {
	if blockSize <= 0 {
		return dst
	}
	var scratch []byte
	for off := 0; off+blockSize <= len(toks); off += blockSize {
		dst = append(dst, xxh3.HashSeed(tokenBytes(toks[off:off+blockSize], &scratch), DynamoSeed))
	}
	return dst
}

// DynamoSequenceHashes appends to dst Dynamo's rolling sequence hashes of
// block hashes: seq_0 = block_0, seq_i = XXH3-64(le64(seq_{i-1}) ‖
// le64(block_i), DynamoSeed).
func DynamoSequenceHashes(blocks []uint64, dst []uint64) []uint64 {
	var seq uint64
	for i, b := range blocks {
		if i == 0 {
			seq = b
		} else {
			var in [16]byte
			binary.LittleEndian.PutUint64(in[0:8], seq)
			binary.LittleEndian.PutUint64(in[8:16], b)
			seq = xxh3.HashSeed(in[:], DynamoSeed)
		}
		dst = append(dst, seq)
	}
	return dst
}
