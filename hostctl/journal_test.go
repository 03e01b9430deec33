package hostctl

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/kvloom/kvloom/matcher"
)

func testSalt(t testing.TB, tenant string) matcher.Salt {
	t.Helper()
	s, err := matcher.NewSalt([]byte("model-fingerprint-0123456789abcd"), tenant)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestJournalRoundTripAndCompaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.journal")
	s := testSalt(t, "acme")
	toks := make([]matcher.Token, 40)
	for i := range toks {
		toks[i] = matcher.Token(i + 5)
	}
	j, err := openJournal(path, 16, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	a := &journalRecord{Op: jAdd, Prefix: true, Salt: s, Bytes: 1234, Tenant: "acme", Tokens: toks}
	b := &journalRecord{Op: jAdd, Salt: s, Tenant: "acme", Tokens: toks[:32]}
	for _, r := range []*journalRecord{a, b, {Op: jRemove, Salt: s, Key: recordKey(b, 16)}} {
		if err := j.add(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.close(); err != nil {
		t.Fatal(err)
	}
	// A crash mid-append leaves a torn record: it is dropped, not fatal.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	torn := appendRecord(nil, a)
	if _, err := f.Write(torn[:len(torn)-7]); err != nil {
		t.Fatal(err)
	}
	f.Close()
	j, err = openJournal(path, 16, discardLogger())
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer j.close()
	if len(j.recs) != 1 || !reflect.DeepEqual(j.recs[0], a) {
		t.Fatalf("replayed %d records (%+v), want the prefix chain alone", len(j.recs), j.recs)
	}
}

func TestJournalCorruptionIsAnError(t *testing.T) {
	s := testSalt(t, "acme")
	var buf []byte
	for range 3 {
		buf = appendRecord(buf, &journalRecord{Op: jAdd, Salt: s, Tenant: "t", Tokens: []matcher.Token{1, 2, 3}})
	}
	buf[20] ^= 0x40 // inside the first record's payload
	_, _, err := readJournal(bytes.NewReader(buf))
	if !errors.Is(err, errJournal) {
		t.Fatalf("err = %v, want errJournal", err)
	}
}

func FuzzJournal(f *testing.F) {
	s := testSalt(f, "acme")
	var seed []byte
	seed = appendRecord(seed, &journalRecord{Op: jAdd, Prefix: true, Salt: s, Bytes: 9, Tenant: "acme", Tokens: []matcher.Token{1, 2, 3, 4}})
	seed = appendRecord(seed, &journalRecord{Op: jRemove, Salt: s, Key: matcher.ChunkKey{1, 2}})
	f.Add(seed)
	f.Add(seed[:len(seed)-3])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, torn, err := readJournal(bytes.NewReader(data))
		if err != nil {
			if recs != nil {
				t.Fatalf("error %v with %d records", err, len(recs))
			}
			return
		}
		var out []byte
		for _, r := range recs {
			out = appendRecord(out, r)
		}
		if !torn && !bytes.Equal(out, data) {
			t.Fatalf("records re-encode to %d bytes, input had %d", len(out), len(data))
		}
		if torn && !bytes.HasPrefix(data, out) {
			t.Fatal("a torn journal's records are not its prefix")
		}
	})
}
