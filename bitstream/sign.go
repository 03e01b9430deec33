package bitstream

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Key files are PEM: "PRIVATE KEY" (PKCS #8) and "PUBLIC KEY" (PKIX), the
// forms `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout`
// write, so keys can be made and inspected with standard tools.
const (
	pemPrivate = "PRIVATE KEY"
	pemPublic  = "PUBLIC KEY"
	maxKeyFile = 16 << 10
)

// GenerateKey returns a new ed25519 key pair read from rand (nil means
// crypto/rand).
func GenerateKey(rnd io.Reader) (ed25519.PublicKey, ed25519.PrivateKey, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	pub, priv, err := ed25519.GenerateKey(rnd)
	if err != nil {
		return nil, nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	return pub, priv, nil
}

// KeyID names a public key in reports: the first 8 bytes of its SHA-256, in
// hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// MarshalPrivateKey encodes a private key as PEM PKCS #8.
func MarshalPrivateKey(priv ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivate, Bytes: der}), nil
}

// MarshalPublicKey encodes a public key as PEM PKIX.
func MarshalPublicKey(pub ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublic, Bytes: der}), nil
}

func keyErr(field, reason, value, limit string) error {
	return &FormatError{Format: "key", Field: field, Offset: -1, Reason: reason, Value: value, Limit: limit}
}

func decodePEM(data []byte, want string) ([]byte, error) {
	if len(data) > maxKeyFile {
		return nil, keyErr("file", "too large", fmt.Sprintf("%d bytes", len(data)), fmt.Sprintf("≤ %d bytes", maxKeyFile))
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, keyErr("pem", "no PEM block found", "", "-----BEGIN "+want+"-----")
	}
	if block.Type != want {
		return nil, keyErr("pem.type", "wrong PEM block type", block.Type, want)
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, keyErr("pem", "data after the PEM block", "", "one block")
	}
	return block.Bytes, nil
}

// ParsePrivateKey decodes a PEM PKCS #8 ed25519 private key.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	der, err := decodePEM(data, pemPrivate)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, keyErr("pkcs8", "cannot decode: "+err.Error(), "", "")
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, keyErr("algorithm", "not an ed25519 key", fmt.Sprintf("%T", k), "ed25519")
	}
	return priv, nil
}

// ParsePublicKey decodes a PEM PKIX ed25519 public key.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	der, err := decodePEM(data, pemPublic)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, keyErr("pkix", "cannot decode: "+err.Error(), "", "")
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, keyErr("algorithm", "not an ed25519 key", fmt.Sprintf("%T", k), "ed25519")
	}
	return pub, nil
}

// WriteKeyPair writes priv to prefix+".key" (mode 0600) and its public key
// to prefix+".pub" (mode 0644). It refuses to overwrite existing files.
func WriteKeyPair(prefix string, priv ed25519.PrivateKey) (keyPath, pubPath string, err error) {
	kb, err := MarshalPrivateKey(priv)
	if err != nil {
		return "", "", err
	}
	pb, err := MarshalPublicKey(priv.Public().(ed25519.PublicKey))
	if err != nil {
		return "", "", err
	}
	keyPath, pubPath = prefix+".key", prefix+".pub"
	if err := writeNew(keyPath, kb, 0o600); err != nil {
		return "", "", err
	}
	if err := writeNew(pubPath, pb, 0o644); err != nil {
		return "", "", errors.Join(err, os.Remove(keyPath))
	}
	return keyPath, pubPath, nil
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return errors.Join(fmt.Errorf("write key file %s: %w", path, err), f.Close(), os.Remove(path))
	}
	if err := f.Sync(); err != nil {
		return errors.Join(fmt.Errorf("sync key file %s: %w", path, err), f.Close())
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close key file %s: %w", path, err)
	}
	return nil
}

// ReadPrivateKey reads a PEM private key file.
func ReadPrivateKey(path string) (ed25519.PrivateKey, error) {
	data, err := readSmall(path)
	if err != nil {
		return nil, err
	}
	k, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("read private key %s: %w", path, err)
	}
	return k, nil
}

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read key file %s: %w", path, err)
	}
	return data, nil
}

// KeyRing is a set of trusted public keys. The zero value and nil trust
// nothing.
type KeyRing struct {
	keys map[string]ed25519.PublicKey // by KeyID
	src  map[string]string            // KeyID → file it came from
}

// NewKeyRing returns a key ring trusting keys.
func NewKeyRing(keys ...ed25519.PublicKey) *KeyRing {
	r := &KeyRing{keys: map[string]ed25519.PublicKey{}, src: map[string]string{}}
	for _, k := range keys {
		r.keys[KeyID(k)] = k
	}
	return r
}

// LoadKeyRing reads every "*.pub" file in dir (PEM public keys). Other files
// are ignored; a .pub file that does not parse is an error naming it, so a
// broken trust directory is never silently half-read.
func LoadKeyRing(dir string) (*KeyRing, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("load trust directory: %w", err)
	}
	r := NewKeyRing()
	var errs []error
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".pub") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		data, err := readSmall(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pub, err := ParsePublicKey(data)
		if err != nil {
			errs = append(errs, fmt.Errorf("trusted key %s: %w", path, err))
			continue
		}
		r.keys[KeyID(pub)] = pub
		r.src[KeyID(pub)] = path
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("load trust directory %s: %w", dir, err)
	}
	return r, nil
}

// Trusts reports whether pub is in the ring.
func (r *KeyRing) Trusts(pub ed25519.PublicKey) bool {
	if r == nil {
		return false
	}
	k, ok := r.keys[KeyID(pub)]
	return ok && k.Equal(pub)
}

// IDs returns the key ids in the ring, sorted.
func (r *KeyRing) IDs() []string {
	if r == nil {
		return nil
	}
	ids := make([]string, 0, len(r.keys))
	for id := range r.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Verify checks the image's signature and that its signer is in ring. It
// returns the signer's key id, and an error wrapping ErrUnsigned,
// ErrBadSignature (the signature does not verify under the key it names:
// tampering or corruption) or ErrUntrusted (a valid signature by a key not
// in ring).
func (img *Image) Verify(ring *KeyRing) (string, error) {
	if img.signer == nil {
		return "", fmt.Errorf("verify image %s: %w", img, ErrUnsigned)
	}
	id := KeyID(img.signer)
	if !ed25519.Verify(img.signer, signedMessage(img.prefix), img.sig) {
		return id, fmt.Errorf("verify image %s: signature by key %s: %w", img, id, ErrBadSignature)
	}
	if !ring.Trusts(img.signer) {
		return id, fmt.Errorf("verify image %s: key %s is not in the trust directory: %w", img, id, ErrUntrusted)
	}
	return id, nil
}
