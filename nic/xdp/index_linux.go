//go:build linux

package xdp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
)

// PushIndex applies an index update to the table and the BPF index map.
// Every added entry is checked first (nic.ErrBadRequest, nothing applied).
// Removals apply first; then additions, highest rank first, as long as the
// table has room for the entry and the map for its anchors (or prefix
// blocks). What does not fit is rejected and named in a
// *nic.TableFullError; the rest is applied. Map writes go in batches
// (BPF_MAP_UPDATE_BATCH, one key at a time on kernels without it).
func (d *Device) PushIndex(ctx context.Context, upd nic.IndexUpdate) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("push index: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("push index: %w", nic.ErrClosed)
	}
	for i, e := range upd.Add {
		if err := checkEntry(e, d.cfg.match, d.cfg.maxEntryTokens); err != nil {
			d.count(func(s *nic.Stats) { s.Errors++ })
			return fmt.Errorf("push index: entry %d (%s): %w", i, e.Key, err)
		}
	}
	t := d.tbl
	touched := map[slotKey]bool{}
	removed := 0
	drop := func(k matcher.ChunkKey) {
		del, write, ok := t.remove(k)
		if !ok {
			return
		}
		removed++
		for _, sk := range del {
			touched[sk] = true
		}
		for _, sk := range write {
			touched[sk] = true
		}
	}
	for _, k := range upd.Remove {
		drop(k)
	}
	// The last addition of a key wins; then by rank, highest first, in the
	// update's order on ties.
	last := map[matcher.ChunkKey]int{}
	for i, e := range upd.Add {
		last[e.Key] = i
	}
	order := make([]int, 0, len(last))
	for i, e := range upd.Add {
		if last[e.Key] == i {
			order = append(order, i)
		}
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(upd.Add[b].Rank, upd.Add[a].Rank) })
	var rejected []matcher.ChunkKey
	inserted := 0
	for _, i := range order {
		e := upd.Add[i]
		drop(e.Key) // adding a resident key replaces it
		refs := t.refsOf(&e)
		if !t.fits(refs) {
			rejected = append(rejected, e.Key)
			continue
		}
		for _, sk := range t.add(e, refs) {
			touched[sk] = true
		}
		inserted++
	}
	if err := d.syncSlots(touched); err != nil {
		d.count(func(s *nic.Stats) { s.Errors++ })
		return fmt.Errorf("push index: %w", err)
	}
	d.count(func(s *nic.Stats) {
		s.TableInserts += uint64(inserted)
		s.TableRemoves += uint64(removed)
		s.TableRejects += uint64(len(rejected))
	})
	if len(rejected) > 0 {
		return &nic.TableFullError{Capacity: d.cfg.capacity, Rejected: rejected}
	}
	return nil
}

// syncSlots makes the map agree with the table on the touched keys:
// deleted where the table has no slot, written with the slot's value
// where it has one. On a map error it rewrites the whole map so that the
// kernel never answers from a stale index, and reports the fault.
func (d *Device) syncSlots(touched map[slotKey]bool) error {
	t := d.tbl
	var del, write []slotKey
	for k := range touched {
		if _, ok := t.slots[k]; ok {
			write = append(write, k)
		} else {
			del = append(del, k)
		}
	}
	err := deleteSlots(d.prog.index, del)
	if err == nil {
		err = writeSlots(d.prog.index, t, write)
	}
	if err == nil {
		return nil
	}
	if rerr := d.resync(); rerr != nil {
		return &nic.DeviceError{Op: "push index", Fatal: true, Detail: fmt.Sprintf("index map update failed (%v) and so did rewriting it (%v)", err, rerr)}
	}
	return &nic.DeviceError{Op: "push index", Detail: fmt.Sprintf("index map update failed and the map was rewritten: %v", err)}
}

// resync empties the index map and writes every slot again.
func (d *Device) resync() error {
	m := d.prog.index
	var (
		k    kvlpKvlpKey
		keys []kvlpKvlpKey
	)
	it := m.Iterate()
	var v kvlpKvlpValue
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate index map: %w", err)
	}
	for _, k := range keys {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete index key: %w", err)
		}
	}
	return writeSlots(m, d.tbl, keysOf(d.tbl.slots))
}

// batchSize bounds one BPF_MAP_*_BATCH call.
const batchSize = 4096

// writeSlots writes the table's value of every key in ks into m.
func writeSlots(m *ebpf.Map, t *table, ks []slotKey) error {
	keys := make([]kvlpKvlpKey, 0, min(len(ks), batchSize))
	vals := make([]kvlpKvlpValue, 0, min(len(ks), batchSize))
	for len(ks) > 0 {
		n := min(len(ks), batchSize)
		keys, vals = keys[:0], vals[:0]
		for _, k := range ks[:n] {
			keys = append(keys, k.bpf())
			vals = append(vals, t.slots[k].value)
		}
		ks = ks[n:]
		_, err := m.BatchUpdate(keys, vals, nil)
		if errors.Is(err, ebpf.ErrNotSupported) {
			for i := range keys {
				if err := m.Put(keys[i], vals[i]); err != nil {
					return fmt.Errorf("write index key %d/%#x: %w", keys[i].SaltId, keys[i].Fingerprint, err)
				}
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("batch write %d index keys: %w", len(keys), err)
		}
	}
	return nil
}

// deleteSlots removes ks from m.
func deleteSlots(m *ebpf.Map, ks []slotKey) error {
	keys := make([]kvlpKvlpKey, 0, min(len(ks), batchSize))
	for len(ks) > 0 {
		n := min(len(ks), batchSize)
		keys = keys[:0]
		for _, k := range ks[:n] {
			keys = append(keys, k.bpf())
		}
		ks = ks[n:]
		_, err := m.BatchDelete(keys, nil)
		if errors.Is(err, ebpf.ErrNotSupported) {
			for _, k := range keys {
				if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					return fmt.Errorf("delete index key %d/%#x: %w", k.SaltId, k.Fingerprint, err)
				}
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("batch delete %d index keys: %w", len(keys), err)
		}
	}
	return nil
}
