package bitstream_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/internal/testutil"
)

func fpgaImage(t testing.TB, key ed25519.PrivateKey) *bitstream.Image {
	t.Helper()
	m := testutil.ImageManifest(bitstream.KindFPGA, "kvmatch", "1.2.0")
	m.Target.Part = "xczu9eg-ffvb1156-2-e"
	m.Params = []bitstream.Param{bitstream.StrParam("variant", "", "anchor-only"), bitstream.IntParam("hash_units", "", 4)}
	return testutil.SignedImage(t, m, key,
		bitstream.Payload{Name: "bitstream", Type: bitstream.PayloadXilinxBit, Data: testBit(t, "xczu9eg-ffvb1156-2-e", 1)},
		bitstream.Payload{Name: "notes", Type: bitstream.PayloadRaw, Data: []byte("odd length payload")})
}

func TestBuildParseRoundTrip(t *testing.T) {
	key, _ := testutil.ImageKey(t)
	iface := [16]byte{1, 2, 3}
	cases := map[string]*bitstream.Image{
		"fpga bit signed":   fpgaImage(t, key),
		"fpga bit unsigned": fpgaImage(t, nil),
		"fpga xclbin": testutil.SignedImage(t, testutil.ImageManifest(bitstream.KindFPGA, "kvmatch-u55c", "0.1.0-rc.1+g1234"), key,
			bitstream.Payload{Name: "xclbin", Type: bitstream.PayloadXclbin, Data: testXclbin(t, "xilinx_u55c_gen3x16_xdma_base_3", iface, 1)}),
		"sim no payload": testutil.SignedImage(t, testutil.ImageManifest(bitstream.KindSim, "simnic", "2.0.0"), key),
		"sim raw payload": testutil.SignedImage(t, testutil.ImageManifest(bitstream.KindSim, "simnic", "2.0.1"), nil,
			bitstream.Payload{Name: "trace", Type: bitstream.PayloadRaw, Data: []byte{1}}),
	}
	for name, img := range cases {
		t.Run(name, func(t *testing.T) {
			b := img.Bytes()
			if int64(len(b)) != img.Size() {
				t.Fatalf("Bytes has %d bytes, Size says %d", len(b), img.Size())
			}
			got, err := bitstream.Parse(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got.ID() != img.ID() {
				t.Errorf("ID %s after parse, %s before", got.ID(), img.ID())
			}
			if !reflect.DeepEqual(got.Manifest(), img.Manifest()) {
				t.Errorf("manifest changed:\n got %+v\nwant %+v", got.Manifest(), img.Manifest())
			}
			if !reflect.DeepEqual(got.Sections(), img.Sections()) {
				t.Errorf("sections changed")
			}
			if !bytes.Equal(got.Bytes(), b) {
				t.Errorf("re-encoding differs")
			}
			gs, gok := got.Signer()
			ws, wok := img.Signer()
			if gs != ws || gok != wok {
				t.Errorf("signer %q,%v after parse, %q,%v before", gs, gok, ws, wok)
			}
			for i, s := range got.Sections() {
				if s.SHA256 != sha256.Sum256(s.Data) {
					t.Errorf("section %d hash does not match its data", i)
				}
			}
		})
	}
}

// specSection and specEncode encode an image straight from the byte
// layout in docs/bitstream.md, independently of Build, so that the code and
// the document cannot drift apart.
type specSection struct {
	name string
	typ  uint16
	data []byte
}

func specEncode(manifest []byte, secs []specSection, key ed25519.PrivateKey) []byte {
	le := binary.LittleEndian
	fixed := 32 + len(manifest) + 72*len(secs)
	if key != nil {
		fixed += 96
	}
	offs := make([]int, len(secs))
	end := fixed
	for i, s := range secs {
		offs[i] = (end + 7) / 8 * 8
		end = offs[i] + len(s.data)
	}
	out := make([]byte, 32, end)
	copy(out, "KVLIMG\r\n")
	le.PutUint16(out[8:], 1)
	if key != nil {
		out[10] = 1
	}
	le.PutUint32(out[12:], uint32(len(manifest)))
	le.PutUint32(out[16:], uint32(len(secs)))
	le.PutUint64(out[24:], uint64(end))
	out = append(out, manifest...)
	for i, s := range secs {
		e := make([]byte, 72)
		copy(e, s.name)
		le.PutUint16(e[16:], s.typ)
		le.PutUint64(e[24:], uint64(offs[i]))
		le.PutUint64(e[32:], uint64(len(s.data)))
		sum := sha256.Sum256(s.data)
		copy(e[40:], sum[:])
		out = append(out, e...)
	}
	if key != nil {
		sig := ed25519.Sign(key, append([]byte("KVLIMG signature v1\x00"), out...))
		out = append(out, key.Public().(ed25519.PublicKey)...)
		out = append(out, sig...)
	}
	for i, s := range secs {
		out = append(out, make([]byte, offs[i]-len(out))...)
		out = append(out, s.data...)
	}
	return out
}

func TestEncodingFollowsSpec(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	img := fpgaImage(t, key)
	mb, err := img.Manifest().MarshalCanonical()
	if err != nil {
		t.Fatal(err)
	}
	var secs []specSection
	for _, s := range img.Sections() {
		secs = append(secs, specSection{s.Name, uint16(s.Type), s.Data})
	}
	want := specEncode(mb, secs, key)
	if !bytes.Equal(img.Bytes(), want) {
		t.Fatalf("Build's encoding differs from the one docs/bitstream.md specifies")
	}
	parsed, err := bitstream.Parse(bytes.NewReader(want))
	if err != nil {
		t.Fatalf("Parse of the spec encoding: %v", err)
	}
	if _, err := parsed.Verify(ring); err != nil {
		t.Fatalf("Verify of the spec encoding: %v", err)
	}
}

func TestParseEveryTruncation(t *testing.T) {
	key, _ := testutil.ImageKey(t)
	b := fpgaImage(t, key).Bytes()
	for n := range len(b) {
		img, err := bitstream.Parse(bytes.NewReader(b[:n]))
		if err == nil || img != nil {
			t.Fatalf("Parse of the first %d of %d bytes: got %v, %v; want an error", n, len(b), img, err)
		}
		if !errors.Is(err, bitstream.ErrMalformed) || !strings.Contains(err.Error(), "truncated") {
			t.Fatalf("Parse of the first %d bytes: %v; want a truncation error", n, err)
		}
	}
}

// TestEveryBitFlipIsCaught flips one bit at every offset of a signed image:
// the container parser or the signature must catch each.
func TestEveryBitFlipIsCaught(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	b := fpgaImage(t, key).Bytes()
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 1 << (i % 8)
		img, err := bitstream.Parse(bytes.NewReader(c))
		if err != nil {
			if img != nil {
				t.Fatalf("offset %d: Parse returned an image with its error", i)
			}
			continue
		}
		if _, err := img.Verify(ring); err == nil {
			t.Fatalf("flipping a bit at offset %d went unnoticed", i)
		} else if !errors.Is(err, bitstream.ErrBadSignature) && !errors.Is(err, bitstream.ErrUntrusted) {
			t.Fatalf("offset %d: Verify: %v", i, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	img := fpgaImage(t, nil)
	good := img.Bytes()
	mb, err := img.Manifest().MarshalCanonical()
	if err != nil {
		t.Fatal(err)
	}
	secs := []specSection{{"bitstream", 2, img.Sections()[0].Data}, {"notes", 1, img.Sections()[1].Data}}
	tableOff := 32 + len(mb)
	set := func(off int, v ...byte) []byte {
		c := bytes.Clone(good)
		copy(c[off:], v)
		return c
	}
	le := binary.LittleEndian
	u32 := func(v uint32) []byte { return le.AppendUint32(nil, v) }
	u64 := func(v uint64) []byte { return le.AppendUint64(nil, v) }
	nonCanonical := bytes.Replace(mb, []byte(`{"name"`), []byte(`{ "name"`), 1)
	unknownField := bytes.Replace(mb, []byte(`{"name"`), []byte(`{"zzz":1,"name"`), 1)
	xdpManifest := testutil.ImageManifest(bitstream.KindXDP, "x", "1.0.0")
	xmb, err := xdpManifest.MarshalCanonical()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		input []byte
		lim   int64
		is    error
		want  []string
	}{
		{"empty", nil, 0, bitstream.ErrMalformed, []string{"header at offset 0", "truncated"}},
		{"magic", set(0, 'X'), 0, bitstream.ErrMalformed, []string{"magic at offset 0", "not a kvloom image"}},
		{"version", set(8, 2), 0, bitstream.ErrMalformed, []string{"version at offset 8", "got 2, want 1"}},
		{"signature algorithm", set(10, 7), 0, bitstream.ErrMalformed, []string{"signature_alg at offset 10", "got 7"}},
		{"reserved byte", set(11, 1), 0, bitstream.ErrMalformed, []string{"reserved at offset 11"}},
		{"manifest too long", set(12, u32(1<<20)...), 0, bitstream.ErrMalformed, []string{"manifest_length at offset 12", "got 1048576, want 2–65536"}},
		{"too many sections", set(16, u32(65)...), 0, bitstream.ErrMalformed, []string{"section_count at offset 16", "got 65, want ≤ 64"}},
		{"reserved word", set(20, 1), 0, bitstream.ErrMalformed, []string{"reserved at offset 20"}},
		{"over the size limit", good, 100, bitstream.ErrMalformed, []string{"total_length at offset 24", "image too large"}},
		{"total length wrong", set(24, u64(uint64(len(good)+8))...), 0, bitstream.ErrMalformed, []string{"total_length", "does not match the sections"}},
		{"manifest not canonical", specEncode(nonCanonical, secs, nil), 0, bitstream.ErrMalformed, []string{"manifest at offset 33", "not in canonical form"}},
		{"manifest unknown field", specEncode(unknownField, secs, nil), 0, bitstream.ErrMalformed, []string{"manifest", "unknown field"}},
		{"section name", set(tableOff, 'A'), 0, bitstream.ErrMalformed, []string{"section[0].name", "invalid section name"}},
		{"section type", set(tableOff+16, 9), 0, bitstream.ErrMalformed, []string{"section[0].type", "unknown payload type", "got 9"}},
		{"section reserved", set(tableOff+19, 1), 0, bitstream.ErrMalformed, []string{"section[0].reserved"}},
		{"section offset", set(tableOff+24, u64(4096)...), 0, bitstream.ErrMalformed, []string{"section[0].offset", "not where the layout puts it", "got 4096"}},
		{"section size zero", set(tableOff+32, u64(0)...), 0, bitstream.ErrMalformed, []string{"section[0].size", "out of range"}},
		{"payload hash", set(len(good)-1, good[len(good)-1]^0xff), 0, bitstream.ErrHashMismatch, []string{"section[1] notes", "SHA-256 does not match"}},
		{"payload type not allowed", specEncode(xmb, []specSection{{"obj", 1, []byte("x")}}, nil), 0, bitstream.ErrMalformed, []string{"payload type not allowed in a xdp image"}},
		{"trailing data", append(bytes.Clone(good), 0), 0, bitstream.ErrMalformed, []string{"end at offset", "data after the last section"}},
		{"padding not zero", func() []byte {
			c := bytes.Clone(good)
			s0 := img.Sections()[0]
			end := len(good) - len(img.Sections()[1].Data) - 1 // the last padding byte before section 1
			if len(s0.Data)%8 == 0 {
				t.Fatal("test needs section 0 to need padding")
			}
			c[end] = 0xee
			return c
		}(), 0, bitstream.ErrMalformed, []string{"section[1].padding", "padding not zero"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img, err := bitstream.ParseWithLimits(bytes.NewReader(tc.input), bitstream.Limits{MaxImageSize: tc.lim})
			if img != nil {
				t.Fatalf("got an image with error %v", err)
			}
			wantErr(t, err, tc.is, tc.want...)
		})
	}
}

func TestVerify(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	other, otherRing := testutil.ImageKey(t)
	img := fpgaImage(t, key)
	id, err := img.Verify(ring)
	if err != nil {
		t.Fatalf("Verify with the signer's ring: %v", err)
	}
	if want := bitstream.KeyID(key.Public().(ed25519.PublicKey)); id != want {
		t.Fatalf("Verify returned key id %s, want %s", id, want)
	}
	_, err = img.Verify(otherRing)
	wantErr(t, err, bitstream.ErrUntrusted, id)
	_, err = img.Verify(nil)
	wantErr(t, err, bitstream.ErrUntrusted)
	_, err = fpgaImage(t, nil).Verify(ring)
	wantErr(t, err, bitstream.ErrUnsigned)

	// A signature over other bytes: swap in the other key's signature.
	b := img.Bytes()
	resigned := fpgaImage(t, other).Bytes()
	if fpgaImage(t, other).ID() != img.ID() {
		t.Fatalf("re-signing changed the image ID")
	}
	sigOff := bytes.Index(b, key.Public().(ed25519.PublicKey)) // the signature block
	forged := bytes.Clone(b)
	copy(forged[sigOff+32:sigOff+96], resigned[sigOff+32:sigOff+96])
	fimg, err := bitstream.Parse(bytes.NewReader(forged))
	if err != nil {
		t.Fatalf("Parse of the forged image: %v", err)
	}
	_, err = fimg.Verify(ring)
	wantErr(t, err, bitstream.ErrBadSignature)
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	pub, priv, err := bitstream.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	keyPath, pubPath, err := bitstream.WriteKeyPair(filepath.Join(dir, "release"), priv)
	if err != nil {
		t.Fatalf("WriteKeyPair: %v", err)
	}
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key file mode %v (%v), want 0600", fi.Mode(), err)
	}
	if _, _, err := bitstream.WriteKeyPair(filepath.Join(dir, "release"), priv); err == nil {
		t.Fatal("WriteKeyPair overwrote an existing key")
	}
	got, err := bitstream.ReadPrivateKey(keyPath)
	if err != nil || !got.Equal(priv) {
		t.Fatalf("ReadPrivateKey: %v (equal %v)", err, got.Equal(priv))
	}
	trust := filepath.Join(dir, "trust")
	if err := os.Mkdir(trust, 0o755); err != nil {
		t.Fatal(err)
	}
	pb, err := os.ReadFile(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{"release.pub": pb, "README": []byte("not a key")} {
		if err := os.WriteFile(filepath.Join(trust, name), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ring, err := bitstream.LoadKeyRing(trust)
	if err != nil {
		t.Fatalf("LoadKeyRing: %v", err)
	}
	if !ring.Trusts(pub) || len(ring.IDs()) != 1 || ring.IDs()[0] != bitstream.KeyID(pub) {
		t.Fatalf("ring %v does not hold exactly the release key %s", ring.IDs(), bitstream.KeyID(pub))
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(trust, "oops.pub"), kb, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = bitstream.LoadKeyRing(trust)
	wantErr(t, err, bitstream.ErrMalformed, "oops.pub", "wrong PEM block type", "PRIVATE KEY")
	_, err = bitstream.ParsePublicKey([]byte("garbage"))
	wantErr(t, err, bitstream.ErrMalformed, "no PEM block")
}

func TestBuildRejects(t *testing.T) {
	bit := testBit(t, "xczu9eg", 1)
	fpga := testutil.ImageManifest(bitstream.KindFPGA, "kvmatch", "1.0.0")
	bad := fpga
	bad.Name, bad.Version, bad.Matcher.KGram = "Bad Name", "v1.0", 0
	cases := []struct {
		name     string
		m        bitstream.Manifest
		payloads []bitstream.Payload
		want     []string
	}{
		{"all manifest problems at once", bad, []bitstream.Payload{{Name: "b", Type: bitstream.PayloadXilinxBit, Data: bit}},
			[]string{"name: invalid image name", "version: not a semantic version", "matcher.kgram: out of range"}},
		{"fpga without payload", fpga, nil, []string{"at least one payload"}},
		{"wrong type for kind", fpga, []bitstream.Payload{{Name: "obj", Type: bitstream.PayloadEBPF, Data: []byte{1}}}, []string{"a fpga image cannot carry a ebpf-elf payload"}},
		{"duplicate names", fpga, []bitstream.Payload{{Name: "b", Type: bitstream.PayloadRaw, Data: []byte{1}}, {Name: "b", Type: bitstream.PayloadRaw, Data: []byte{2}}}, []string{`name "b" used twice`}},
		{"bad section name", fpga, []bitstream.Payload{{Name: "this-name-is-too-long", Type: bitstream.PayloadRaw, Data: []byte{1}}}, []string{"invalid name"}},
		{"empty payload", fpga, []bitstream.Payload{{Name: "b", Type: bitstream.PayloadRaw}}, []string{"payload b: empty"}},
		{"vendor payload invalid", fpga, []bitstream.Payload{{Name: "b", Type: bitstream.PayloadXilinxBit, Data: bit[:40]}}, []string{"xilinx-bit", "length runs past the end of the file"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img, err := bitstream.Build(tc.m, tc.payloads, nil)
			if img != nil {
				t.Fatal("Build returned an image with an error")
			}
			wantErr(t, err, nil, tc.want...)
		})
	}
}
