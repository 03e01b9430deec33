package bitstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Loader puts images onto one kind of target. Each implementation reaches
// its device through a root path or an interface passed in its options, so
// tests run it against a fake tree or a stand-in target.
type Loader interface {
	// Name names the loader: "sim", "xdp", "fpga-dfl", "fpga-mgr", "xrt".
	Name() string
	// Check reports whether img fits the device: kind, part, interface,
	// payload. It reads the device's state and changes nothing. Errors
	// wrap ErrIncompatible, ErrNotSupported, ErrToolMissing or ErrNoDevice.
	Check(ctx context.Context, img *Image) error
	// Load makes img live and returns once the device reports it ready.
	// An error wrapping ErrTargetUnchanged means the load failed before the
	// device was changed, so the previous image is still live; any other
	// error means the device may hold neither image.
	Load(ctx context.Context, img *Image) error
}

// SlotOptions configure a Slot.
type SlotOptions struct {
	// Trust holds the trusted public keys; nil trusts no key.
	Trust *KeyRing
	// Insecure admits unsigned images and images signed by keys outside
	// Trust. Each such admission is logged at Warn and counted in
	// SlotStats.InsecureAdmitted. Images whose signature does not verify
	// are refused even then.
	Insecure bool
	// Require is what the control plane needs from every image.
	Require Requirements
	// RestoreTimeout bounds putting the previous image back after a failed
	// load; zero means 2 minutes. The restore runs even when the failed
	// load's context was cancelled.
	RestoreTimeout time.Duration
	// Logger receives load events; nil discards them.
	Logger *slog.Logger
}

// Slot is one device's image slot: it admits images (trust, compatibility),
// switches to them through a Loader, and puts the previous image back when
// a load fails. The previous image stays live until the new one reports
// ready. A Slot is safe for concurrent use; loads are serialised.
type Slot struct {
	loader Loader
	opts   SlotOptions
	log    *slog.Logger

	loadMu sync.Mutex // held for the whole of a load

	mu     sync.Mutex // guards the fields below
	live   *Image
	status Status
	stats  SlotStats
}

// Status says which image is live on a slot and how the last load went.
type Status struct {
	Loader string    `json:"loader"`
	Live   *ImageRef `json:"live,omitempty"` // nil: nothing live, or a failed load that could not be undone
	// LiveSince is when the live image became live (again, after a
	// restore).
	LiveSince time.Time `json:"live_since,omitzero"`
	// LiveInsecure says why the live image was admitted only in insecure
	// mode; empty when it was trusted.
	LiveInsecure string    `json:"live_insecure,omitempty"`
	Loading      *ImageRef `json:"loading,omitempty"` // the image being loaded now
	Last         *Attempt  `json:"last,omitempty"`    // the last load attempt
}

// Attempt records one load.
type Attempt struct {
	Image    ImageRef  `json:"image"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Stage is where a failed load stopped: "trust", "compat", "check"
	// (nothing was touched), or "load"; empty on success.
	Stage string `json:"stage,omitempty"`
	Error string `json:"error,omitempty"` // why it failed; empty on success
	// Restored is true when the previous image was put back after the
	// failure; RestoreError says why that failed too.
	Restored     bool   `json:"restored,omitempty"`
	RestoreError string `json:"restore_error,omitempty"`
}

// OK reports whether the attempt succeeded.
func (a *Attempt) OK() bool { return a.Error == "" }

func (s Status) String() string {
	var b strings.Builder
	b.WriteString(s.Loader)
	b.WriteString(": ")
	if s.Live != nil {
		fmt.Fprintf(&b, "live %s since %s", s.Live, s.LiveSince.UTC().Format(time.RFC3339))
		if s.LiveInsecure != "" {
			fmt.Fprintf(&b, " (admitted insecurely: %s)", s.LiveInsecure)
		}
	} else {
		b.WriteString("no image live")
	}
	if s.Loading != nil {
		fmt.Fprintf(&b, "; loading %s", s.Loading)
	}
	if a := s.Last; a != nil && !a.OK() {
		fmt.Fprintf(&b, "; last load of %s failed at %s: %s", a.Image, a.Stage, a.Error)
		switch {
		case a.Restored:
			b.WriteString("; previous image restored")
		case a.RestoreError != "":
			fmt.Fprintf(&b, "; restoring the previous image failed: %s", a.RestoreError)
		}
	}
	return b.String()
}

// SlotStats are cumulative counters, for the daemon's metrics.
type SlotStats struct {
	Loads            uint64 // successful loads
	Failures         uint64 // loads that failed after admission and checks
	Refused          uint64 // images refused before anything was touched (trust, compatibility)
	Restores         uint64 // previous images put back after a failure
	RestoreFailures  uint64 // restores that failed too
	InsecureAdmitted uint64 // unsigned or untrusted images admitted in insecure mode
}

// NewSlot returns a slot that loads through l. Nothing is live until the
// first successful Load.
func NewSlot(l Loader, opts SlotOptions) *Slot {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.RestoreTimeout <= 0 {
		opts.RestoreTimeout = 2 * time.Minute
	}
	return &Slot{loader: l, opts: opts, log: log.With("loader", l.Name()), status: Status{Loader: l.Name()}}
}

// Status returns the slot's status. It does not wait for a load in
// progress.
func (s *Slot) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	if st.Last != nil {
		a := *st.Last
		st.Last = &a
	}
	return st
}

// Stats returns the slot's counters.
func (s *Slot) Stats() SlotStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Live returns the live image, or nil.
func (s *Slot) Live() *Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live
}

// Load admits img (signature and trust, the control plane's requirements,
// the loader's device checks) and switches the device to it. When the load
// fails after the device was touched, the previous image is loaded again.
// Errors wrap ErrUnsigned, ErrUntrusted, ErrBadSignature, ErrIncompatible
// (nothing touched), or the loader's error.
func (s *Slot) Load(ctx context.Context, img *Image) error {
	if img == nil {
		return errors.New("load image: nil image")
	}
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	ref := img.Ref()
	att := &Attempt{Image: ref, Started: time.Now()}
	s.mu.Lock()
	s.status.Loading = &ref
	s.mu.Unlock()

	insecure, err := s.admit(img)
	if err != nil {
		return s.refuse(att, "trust", err)
	}
	if err := s.opts.Require.Check(img.manifest); err != nil {
		return s.refuse(att, "compat", err)
	}
	if err := s.loader.Check(ctx, img); err != nil {
		return s.refuse(att, "check", err)
	}
	s.log.Info("image_load_start", "image", ref.String())
	loadErr := s.loader.Load(ctx, img)
	if loadErr == nil {
		att.Finished = time.Now()
		s.mu.Lock()
		s.live = img
		s.stats.Loads++
		s.status.Live, s.status.LiveSince, s.status.LiveInsecure = &ref, att.Finished, insecure
		s.status.Loading, s.status.Last = nil, att
		s.mu.Unlock()
		s.log.Info("image_load_done", "image", ref.String(), "duration", att.Finished.Sub(att.Started))
		return nil
	}
	att.Stage, att.Error = "load", loadErr.Error()
	s.mu.Lock()
	prev := s.live
	prevInsecure := s.status.LiveInsecure
	s.stats.Failures++
	s.mu.Unlock()
	s.log.Error("image_load_failed", "image", ref.String(), "err", loadErr)
	err = fmt.Errorf("load image %s: %w", ref, loadErr)
	switch {
	case errors.Is(loadErr, ErrTargetUnchanged):
		// The device still runs prev; nothing to undo.
		s.finish(att, prev, prevInsecure, false)
		return err
	case prev == nil:
		s.finish(att, nil, "", false)
		return err
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.RestoreTimeout)
	rerr := s.loader.Load(rctx, prev)
	cancel()
	if rerr != nil {
		att.RestoreError = rerr.Error()
		s.mu.Lock()
		s.stats.RestoreFailures++
		s.mu.Unlock()
		s.log.Error("image_restore_failed", "image", prev.Ref().String(), "err", rerr)
		s.finish(att, nil, "", false)
		return fmt.Errorf("%w; restoring previous image %s also failed: %w", err, prev.Ref(), rerr)
	}
	att.Restored = true
	s.mu.Lock()
	s.stats.Restores++
	s.mu.Unlock()
	s.log.Warn("image_restored", "image", prev.Ref().String())
	s.finish(att, prev, prevInsecure, true)
	return fmt.Errorf("%w (previous image %s restored)", err, prev.Ref())
}

// finish records a failed attempt, with live being what the device runs now.
func (s *Slot) finish(att *Attempt, live *Image, insecure string, restored bool) {
	att.Finished = time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live = live
	if live == nil {
		s.status.Live, s.status.LiveSince, s.status.LiveInsecure = nil, time.Time{}, ""
	} else {
		ref := live.Ref()
		s.status.Live, s.status.LiveInsecure = &ref, insecure
		if restored {
			s.status.LiveSince = att.Finished
		}
	}
	s.status.Loading, s.status.Last = nil, att
}

func (s *Slot) refuse(att *Attempt, stage string, err error) error {
	att.Stage, att.Error, att.Finished = stage, err.Error(), time.Now()
	s.mu.Lock()
	s.stats.Refused++
	s.status.Loading, s.status.Last = nil, att
	s.mu.Unlock()
	s.log.Warn("image_refused", "image", att.Image.String(), "stage", stage, "err", err)
	return fmt.Errorf("load image %s: %w", att.Image, err)
}

// admit checks img's signature against the trust set. It returns why the
// image was admitted only in insecure mode ("" when trusted).
func (s *Slot) admit(img *Image) (string, error) {
	_, err := img.Verify(s.opts.Trust)
	switch {
	case err == nil:
		return "", nil
	case errors.Is(err, ErrBadSignature):
		return "", err
	case !s.opts.Insecure:
		return "", err
	}
	reason := "unsigned"
	if errors.Is(err, ErrUntrusted) {
		id, _ := img.Signer()
		reason = "signed by untrusted key " + id
	}
	s.mu.Lock()
	s.stats.InsecureAdmitted++
	s.mu.Unlock()
	s.log.Warn("image_admitted_insecure", "image", img.Ref().String(), "reason", reason)
	return reason, nil
}
