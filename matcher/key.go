package matcher

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/zeebo/xxh3"
)

// Token is one token id of a prompt. On the wire and in every hash it is
// encoded as a little-endian uint32.
type Token = uint32

// ChunkKey identifies stored KV: a 128-bit hash seeded by a Salt. Prefix
// block keys and position-independent chunk keys share this type; the
// hashing contract (docs/hashing.md) keeps their domains apart.
type ChunkKey [16]byte

// String returns the key as 32 lowercase hex digits.
func (k ChunkKey) String() string { return hex.EncodeToString(k[:]) }

// ParseChunkKey parses the 32-hex-digit form that String returns.
func ParseChunkKey(s string) (ChunkKey, error) {
	var k ChunkKey
	if len(s) != 2*len(k) {
		return k, fmt.Errorf("parse chunk key %q: %d hex digits, want %d: %w", s, len(s), 2*len(k), ErrBadKey)
	}
	if _, err := hex.Decode(k[:], []byte(s)); err != nil {
		return ChunkKey{}, fmt.Errorf("parse chunk key %q: %w: %w", s, ErrBadKey, err)
	}
	return k, nil
}

// SaltSize is the encoded size of a Salt in bytes.
const SaltSize = 16

// Salt seeds every key so that different models and different tenants never
// share KV by accident. Model is the first 8 bytes of the model fingerprint
// (kvcache.ModelSpec.Fingerprint); Tenant is a 64-bit hash of the tenant's
// namespace, or zero for content that was explicitly shared between tenants
// of the same model.
type Salt struct {
	Model  [8]byte
	Tenant [8]byte
}

// tenantSeed domain-separates tenant namespace hashes from every other hash
// kvloom computes. Changing it changes every key: it is part of the hashing
// contract and pinned by test vectors.
const tenantSeed = 0x6b766c6f6f6d5401 // "kvloomT\x01"

// NewSalt derives the salt for a tenant's namespace under a model
// fingerprint. The fingerprint must be at least 8 bytes; the namespace must
// not be empty (use SharedSalt for shared content).
func NewSalt(modelFingerprint []byte, tenant string) (Salt, error) {
	var s Salt
	if len(modelFingerprint) < len(s.Model) {
		return s, fmt.Errorf("new salt: model fingerprint has %d bytes, want at least %d: %w", len(modelFingerprint), len(s.Model), ErrSaltSize)
	}
	if tenant == "" {
		return s, fmt.Errorf("new salt: %w", ErrEmptyTenant)
	}
	copy(s.Model[:], modelFingerprint)
	h := xxh3.HashStringSeed(tenant, tenantSeed)
	if h == 0 { // zero is reserved for shared content
		h = 1
	}
	binary.LittleEndian.PutUint64(s.Tenant[:], h)
	return s, nil
}

// SharedSalt is the salt of content shared by every tenant of a model.
func SharedSalt(modelFingerprint []byte) (Salt, error) {
	var s Salt
	if len(modelFingerprint) < len(s.Model) {
		return s, fmt.Errorf("shared salt: model fingerprint has %d bytes, want at least %d: %w", len(modelFingerprint), len(s.Model), ErrSaltSize)
	}
	copy(s.Model[:], modelFingerprint)
	return s, nil
}

// ParseSalt decodes the SaltSize-byte form that Bytes returns.
func ParseSalt(b []byte) (Salt, error) {
	var s Salt
	if len(b) != SaltSize {
		return s, fmt.Errorf("parse salt: %d bytes, want %d: %w", len(b), SaltSize, ErrSaltSize)
	}
	copy(s.Model[:], b[:8])
	copy(s.Tenant[:], b[8:])
	return s, nil
}

// Bytes returns the salt's SaltSize-byte encoding: Model then Tenant.
func (s Salt) Bytes() [SaltSize]byte {
	var b [SaltSize]byte
	copy(b[:8], s.Model[:])
	copy(b[8:], s.Tenant[:])
	return b
}

// Shared returns the salt of content shared between all tenants of s's model.
func (s Salt) Shared() Salt { return Salt{Model: s.Model} }

// IsShared reports whether s is a shared salt (zero tenant).
func (s Salt) IsShared() bool { return s.Tenant == [8]byte{} }

// saltIDSeed domain-separates salt ids from other hashes.
const saltIDSeed = 0x6b766c6f6f6d5301 // "kvloomS\x01"

// ID is a 64-bit identifier of the salt, used where 16 bytes do not fit: the
// chunk blob header, KVLP packets and the XDP index map key. It is not secret.
func (s Salt) ID() uint64 {
	b := s.Bytes()
	return xxh3.HashSeed(b[:], saltIDSeed)
}

// String shows the salt as model/tenant hex, for logs that must not reveal
// tenant names.
func (s Salt) String() string {
	return hex.EncodeToString(s.Model[:]) + "/" + hex.EncodeToString(s.Tenant[:])
}
