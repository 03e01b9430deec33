// Package nictest is the conformance suite every nic.Device backend runs in
// its tests: the simulator directly (nic/simnic), the FPGA driver over a
// simulated BAR (nic/fpga), the XDP backend (nic/xdp).
//
// The oracle is the software matcher. For random and adversarial indexes
// and prompts, the matches a device reports must equal matcher.FindAll over
// an index holding exactly the entries that are in the device's table: the
// suite tracks them from what PushIndex reports (a *nic.TableFullError names
// what was rejected and evicted) and builds that index with the device's own
// matcher parameters (Info.Matcher). A device never reports a match the
// matcher would not, and misses one only where its table was full.
//
// The suite talks to a device through the nic.Device contract only, so a
// backend whose data path matches anchor fingerprints and verifies tokens on
// the host (CapAnchorOnly, the XDP backend) is checked through that host
// side exactly as an exact device is: what Submit reports is what counts.
// Register-level fault injection runs only for backends that expose their
// BAR (Harness.BAR).
//
// Capacity (rank-ordered eviction and rejection), backpressure (a consumer
// that stops reading must make Submit refuse with nic.ErrQueueFull, never
// queue without bound), bad input, cancellation, concurrency, counters and
// Close are part of the suite.
//
// nictest imports nic, matcher and the testing package; it must not import
// a backend.
package nictest
