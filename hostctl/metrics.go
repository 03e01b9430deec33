package hostctl

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the daemon's Prometheus series. Labels are bounded: method,
// code, tier, direction, reason, result, backend — never tenants or keys.
type metrics struct {
	reg *prometheus.Registry

	requests        *prometheus.CounterVec // method, code
	inflight        prometheus.Gauge       // requests in flight
	prepareSeconds  prometheus.Histogram   // whole Prepare, plan to done
	lookupSeconds   prometheus.Histogram   // Lookup
	firstLayer      prometheus.Histogram   // Prepare: until layer 0 is ready
	chunkMisses     *prometheus.CounterVec // reason
	peerBytes       *prometheus.CounterVec // direction
	promptTokens    prometheus.Counter     // tokens asked about in Prepare
	reusedTokens    *prometheus.CounterVec // kind: prefix, chunk
	partial         prometheus.Counter     // Prepares cut by their deadline
	writeback       prometheus.Counter     // chunks accepted for write-back
	quotaRejects    *prometheus.CounterVec // reason
	imageLoads      *prometheus.CounterVec // result
	backendUp       *prometheus.GaugeVec   // backend
	pruned          prometheus.Counter     // index entries pruned
	controlRounds   prometheus.Counter     // control loop rounds
	controlPushes   *prometheus.CounterVec // op: add, remove, reject
	hotCandidates   prometheus.Gauge       // sketch candidates last round
	peerFetches     *prometheus.CounterVec // result
	peerSync        prometheus.Counter     // index entries learned from peers
	segmentsActive  prometheus.Gauge       // segments alive
	segmentBytes    prometheus.Gauge       // their bytes
	writebackQueued prometheus.Gauge       // chunks accepted, not yet written
	indexEntries    prometheus.Gauge       // index entries
	segmentExpired  prometheus.Counter     // segments deleted by TTL
	dropped         *prometheus.CounterVec // reason: planned chunks dropped mid-stream
	dmaLayers       *prometheus.CounterVec // path: pinned, pageable
	peerPromotions  *prometheus.CounterVec // result: queued, rejected
	materialized    *prometheus.CounterVec // result: stored, failed
	materializedTok prometheus.Counter     // tokens of materialised chunks
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{reg: reg}
	f := factory{reg}
	m.requests = f.counterVec("kvloom_api_requests_total", "API calls by method and gRPC status code.", "method", "code")
	m.inflight = f.gauge("kvloom_api_inflight_requests", "API calls in flight.")
	lat := prometheus.ExponentialBuckets(5e-6, 2, 22) // 5µs .. ~10s
	m.prepareSeconds = f.histogram("kvloom_api_prepare_duration_seconds", "Prepare latency, from the call to the last layer ready.", lat)
	m.lookupSeconds = f.histogram("kvloom_api_lookup_duration_seconds", "Lookup latency.", lat)
	m.firstLayer = f.histogram("kvloom_api_prepare_first_layer_seconds", "Prepare latency until layer 0 is ready.", lat)
	m.chunkMisses = f.counterVec("kvloom_reuse_chunk_misses_total", "Planned chunks that could not be loaded in time, by reason (absent, deadline, corrupt, unavailable, ...).", "reason")
	m.peerBytes = f.counterVec("kvloom_peer_bytes_total", "KV bytes moved between daemons, by direction (fetched, served).", "direction")
	m.promptTokens = f.counter("kvloom_reuse_prompt_tokens_total", "Prompt tokens Prepare was asked about.")
	m.reusedTokens = f.counterVec("kvloom_reuse_reused_tokens_total", "Prompt tokens served from stored KV, by kind (prefix, chunk).", "kind")
	m.partial = f.counter("kvloom_reuse_partial_prepares_total", "Prepare calls whose load deadline dropped some ranges.")
	m.writeback = f.counter("kvloom_writeback_chunks_total", "Chunks accepted into the write-back queue.")
	m.quotaRejects = f.counterVec("kvloom_api_quota_rejects_total", "Calls refused by a quota or load limit, by reason.", "reason")
	m.imageLoads = f.counterVec("kvloom_device_image_loads_total", "Accelerator image loads, by result.", "result")
	m.backendUp = f.gaugeVec("kvloom_backend_up", "1 when a backend (device, dma, redis, peers, disk) works, 0 when the daemon serves without it.", "backend")
	m.pruned = f.counter("kvloom_index_pruned_total", "Index entries dropped because no tier holds their chunks any more.")
	m.controlRounds = f.counter("kvloom_control_rounds_total", "Control loop rounds.")
	m.controlPushes = f.counterVec("kvloom_control_table_updates_total", "Device table entries pushed, by operation (add, remove, reject).", "op")
	m.hotCandidates = f.gauge("kvloom_control_hot_candidates", "Hot segments the sketch proposed in the last round.")
	m.peerFetches = f.counterVec("kvloom_peer_fetches_total", "Chunk fetches from peer daemons, by result.", "result")
	m.peerSync = f.counter("kvloom_peer_synced_entries_total", "Index entries learned from peer daemons.")
	m.segmentsActive = f.gauge("kvloom_segment_active", "Shared-memory KV segments alive.")
	m.segmentBytes = f.gauge("kvloom_segment_bytes", "Bytes of shared-memory KV segments alive.")
	m.segmentExpired = f.counter("kvloom_segment_expired_total", "Segments deleted because their TTL passed before Release.")
	m.writebackQueued = f.gauge("kvloom_writeback_queued_chunks", "Chunks accepted for write-back and not yet written.")
	m.indexEntries = f.gauge("kvloom_index_entries", "Entries (prefix chains and chunks) in the daemon's index.")
	m.dropped = f.counterVec("kvloom_reuse_dropped_chunks_total", "Planned chunks a Prepare dropped after sending its plan (a later layer failed or came too late), by reason.", "reason")
	m.dmaLayers = f.counterVec("kvloom_dma_layers_total", "Layers copied to GPU buffers, by path (pinned: stitched straight into the DMA's pinned pool; pageable: through its staging copy).", "path")
	m.peerPromotions = f.counterVec("kvloom_peer_promotions_total", "Chunks loaded from peers and offered to the local tiers' write-back queue, by result (queued, rejected).", "result")
	m.materialized = f.counterVec("kvloom_control_materialized_chunks_total", "Hot spans the control loop turned into position-independent chunks, by result (stored, failed).", "result")
	m.materializedTok = f.counter("kvloom_control_materialized_tokens_total", "Tokens of the chunks the control loop materialised from hot spans.")
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(g)
	return g
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}

// setBackend records a backend's state.
func (m *metrics) setBackend(name string, up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.backendUp.WithLabelValues(name).Set(v)
}
