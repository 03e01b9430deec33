/*
 * A stand-in for libcuda.so.1 used by gpu's tests on machines without a
 * GPU. It implements the driver functions the CUDA backend binds, with the
 * C signatures of cuda.h, on host memory: "device" memory is malloc'ed and
 * copies are memcpy.
 *
 * Streams behave like the real ones where the backend's correctness
 * depends on it: each stream has a worker thread that runs its copies and
 * event records in order, after the call that queued them has returned,
 * optionally slowed to a given rate (fake_cuda_set_rate), so a backend that
 * reuses a pinned buffer before its copy's event completes reads back
 * corrupted data. Events complete when the stream reaches them;
 * cuEventSynchronize waits for that, and cuEventElapsedTime answers
 * CUDA_ERROR_NOT_READY before. Copies check their device range. Counters
 * (fake_cuda_stats) tell the tests how many async copies were made, and
 * from pinned or pageable memory, and how many events were created.
 *
 * fake_cuda_set_inline makes copies and events complete inside the call,
 * for benchmarks of the backend's own per-call cost.
 *
 * It says nothing about real DMA speed.
 *
 * Built by the test with: cc -shared -fPIC -pthread -o libcuda.so.1 libcuda.c
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct { int current; } ctx_t;

enum {
	OK = 0, INVALID_VALUE = 1, OUT_OF_MEMORY = 2, NOT_INITIALIZED = 3,
	INVALID_DEVICE = 101, INVALID_CONTEXT = 201, INVALID_HANDLE = 400, NOT_READY = 600,
};

/* One lock and one condition variable for all the bookkeeping; streams
 * wait on it for work, and callers for events and streams to drain. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static int initialized;
static ctx_t primary;
static __thread ctx_t *current; /* CUDA contexts are current per thread */
static long live_device_allocs, live_host_allocs, live_registrations, live_events, live_streams;
static long stat_async_copies, stat_async_pinned_bytes, stat_async_pageable_bytes, stat_events_created, stat_event_records;
static long rate_bytes_per_ms; /* 0: as fast as memcpy */
static int inline_mode;        /* run copies and events at call time, on the caller's thread */

typedef struct { double t; unsigned long gen, done_gen; int recorded; } event_t;

enum { OP_COPY, OP_EVENT };
typedef struct op {
	int kind;
	void *dst;
	const void *src;
	size_t n;
	event_t *ev;
	unsigned long gen;
	struct op *next;
} op_t;

typedef struct stream {
	pthread_t th;
	op_t *head, *tail;
	int busy, stop;
	unsigned flags;
	struct stream *next;
} stream_t;
static stream_t *streams;

/* Ranges of memory the driver handed out or registered. */
typedef struct range { char *p; size_t n; struct range *next; } range_t;
static range_t *device_ranges, *pinned_ranges;

static double now_ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void add_range(range_t **l, void *p, size_t n) {
	range_t *r = malloc(sizeof *r);
	r->p = p; r->n = n; r->next = *l; *l = r;
}
static int del_range(range_t **l, void *p) {
	for (range_t **r = l; *r; r = &(*r)->next) {
		if ((*r)->p == p) { range_t *x = *r; *r = x->next; free(x); return 1; }
	}
	return 0;
}
static int within(range_t *l, const void *p, size_t n) {
	for (; l; l = l->next) {
		if ((const char *)p >= l->p && (const char *)p + n <= l->p + l->n) return 1;
	}
	return 0;
}

#define NEED_INIT() do { if (!initialized) return NOT_INITIALIZED; } while (0)
#define NEED_CTX() do { NEED_INIT(); if (current != &primary) return INVALID_CONTEXT; } while (0)

static void *stream_main(void *arg) {
	stream_t *s = arg;
	pthread_mutex_lock(&mu);
	for (;;) {
		while (!s->head && !s->stop) pthread_cond_wait(&cv, &mu);
		if (!s->head) break;
		op_t *o = s->head;
		s->head = o->next;
		if (!s->head) s->tail = NULL;
		s->busy = 1;
		long rate = rate_bytes_per_ms;
		pthread_mutex_unlock(&mu);
		if (o->kind == OP_COPY) {
			/* Read the source at the end of the modelled time: a buffer
			 * reused before the copy's event completes shows up as wrong
			 * bytes on the "device". */
			if (rate > 0) {
				long ns = (long)((double)o->n / rate * 1e6);
				struct timespec ts = { ns / 1000000000L, ns % 1000000000L };
				nanosleep(&ts, NULL);
			}
			memcpy(o->dst, o->src, o->n);
		}
		pthread_mutex_lock(&mu);
		if (o->kind == OP_EVENT && o->ev->gen == o->gen) {
			o->ev->t = now_ms();
			o->ev->done_gen = o->gen;
		}
		s->busy = 0;
		free(o);
		pthread_cond_broadcast(&cv);
	}
	pthread_mutex_unlock(&mu);
	return NULL;
}

static void enqueue(stream_t *s, op_t *o) {
	o->next = NULL;
	if (s->tail) s->tail->next = o; else s->head = o;
	s->tail = o;
	pthread_cond_broadcast(&cv);
}

/* Called with mu held. */
static void drain(stream_t *s) { while (s->head || s->busy) pthread_cond_wait(&cv, &mu); }

CUresult cuInit(unsigned int flags) { if (flags != 0) return INVALID_VALUE; initialized = 1; return OK; }
CUresult cuDriverGetVersion(int *v) { *v = 12040; return OK; }
CUresult cuGetErrorName(CUresult e, const char **s) {
	switch (e) {
	case OK: *s = "CUDA_SUCCESS"; return OK;
	case INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; return OK;
	case OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; return OK;
	case NOT_INITIALIZED: *s = "CUDA_ERROR_NOT_INITIALIZED"; return OK;
	case INVALID_CONTEXT: *s = "CUDA_ERROR_INVALID_CONTEXT"; return OK;
	case INVALID_DEVICE: *s = "CUDA_ERROR_INVALID_DEVICE"; return OK;
	case INVALID_HANDLE: *s = "CUDA_ERROR_INVALID_HANDLE"; return OK;
	case NOT_READY: *s = "CUDA_ERROR_NOT_READY"; return OK;
	}
	*s = NULL;
	return INVALID_VALUE;
}
CUresult cuDeviceGetCount(int *n) { NEED_INIT(); *n = 2; return OK; }
CUresult cuDeviceGet(CUdevice *d, int ordinal) { NEED_INIT(); if (ordinal < 0 || ordinal > 1) return INVALID_DEVICE; *d = ordinal; return OK; }
CUresult cuDeviceGetName(char *name, int len, CUdevice d) { NEED_INIT(); snprintf(name, len, "Fake CUDA Device %d", d); return OK; }
CUresult cuDeviceGetPCIBusId(char *bus, int len, CUdevice d) { NEED_INIT(); snprintf(bus, len, "0000:%02X:00.0", 0x3b + d); return OK; }
CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice d) { NEED_INIT(); (void)d; *bytes = (size_t)80 << 30; return OK; }
CUresult cuDevicePrimaryCtxRetain(ctx_t **c, CUdevice d) { NEED_INIT(); (void)d; *c = &primary; return OK; }
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) { NEED_INIT(); (void)d; return OK; }
CUresult cuCtxSetCurrent(ctx_t *c) { NEED_INIT(); current = c; return OK; }

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
	NEED_CTX();
	if (n == 0) return INVALID_VALUE;
	void *m = malloc(n);
	if (!m) return OUT_OF_MEMORY;
	memset(m, 0, n);
	pthread_mutex_lock(&mu);
	add_range(&device_ranges, m, n);
	live_device_allocs++;
	pthread_mutex_unlock(&mu);
	*p = (CUdeviceptr)(uintptr_t)m;
	return OK;
}
/* Like the real one, freeing device memory waits for the device to be idle. */
CUresult cuMemFree_v2(CUdeviceptr p) {
	NEED_CTX();
	pthread_mutex_lock(&mu);
	for (stream_t *s = streams; s; s = s->next) drain(s);
	int ok = del_range(&device_ranges, (void *)(uintptr_t)p);
	if (ok) live_device_allocs--;
	pthread_mutex_unlock(&mu);
	if (!ok) return INVALID_VALUE;
	free((void *)(uintptr_t)p);
	return OK;
}
CUresult cuMemHostAlloc(void **pp, size_t n, unsigned int flags) {
	NEED_CTX();
	(void)flags;
	*pp = malloc(n);
	if (!*pp) return OUT_OF_MEMORY;
	pthread_mutex_lock(&mu);
	add_range(&pinned_ranges, *pp, n);
	live_host_allocs++;
	pthread_mutex_unlock(&mu);
	return OK;
}
CUresult cuMemFreeHost(void *p) {
	NEED_CTX();
	pthread_mutex_lock(&mu);
	int ok = del_range(&pinned_ranges, p);
	if (ok) live_host_allocs--;
	pthread_mutex_unlock(&mu);
	if (!ok) return INVALID_VALUE;
	free(p);
	return OK;
}
CUresult cuMemHostRegister_v2(void *p, size_t n, unsigned int flags) {
	NEED_CTX();
	if (!p || n == 0 || flags > 7) return INVALID_VALUE;
	pthread_mutex_lock(&mu);
	add_range(&pinned_ranges, p, n);
	live_registrations++;
	pthread_mutex_unlock(&mu);
	return OK;
}
CUresult cuMemHostUnregister(void *p) {
	NEED_CTX();
	pthread_mutex_lock(&mu);
	int ok = p && del_range(&pinned_ranges, p);
	if (ok) live_registrations--;
	pthread_mutex_unlock(&mu);
	return ok ? OK : INVALID_VALUE;
}

static int device_range_ok(CUdeviceptr dst, size_t n) {
	pthread_mutex_lock(&mu);
	int ok = within(device_ranges, (void *)(uintptr_t)dst, n);
	pthread_mutex_unlock(&mu);
	return ok;
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) {
	NEED_CTX();
	if (!device_range_ok(dst, n)) return INVALID_VALUE;
	memcpy((void *)(uintptr_t)dst, src, n);
	return OK;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, stream_t *s) {
	NEED_CTX();
	if (!s) return INVALID_VALUE; /* the backend always uses its own stream */
	if (!device_range_ok(dst, n)) return INVALID_VALUE;
	pthread_mutex_lock(&mu);
	stat_async_copies++;
	if (within(pinned_ranges, src, n)) stat_async_pinned_bytes += n; else stat_async_pageable_bytes += n;
	if (inline_mode) {
		pthread_mutex_unlock(&mu);
		memcpy((void *)(uintptr_t)dst, src, n);
		return OK;
	}
	op_t *o = calloc(1, sizeof *o);
	o->kind = OP_COPY; o->dst = (void *)(uintptr_t)dst; o->src = src; o->n = n;
	enqueue(s, o);
	pthread_mutex_unlock(&mu);
	return OK;
}
CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) {
	NEED_CTX();
	if (!device_range_ok(src, n)) return INVALID_VALUE;
	memcpy(dst, (void *)(uintptr_t)src, n);
	return OK;
}

CUresult cuStreamCreate(stream_t **out, unsigned int flags) {
	NEED_CTX();
	stream_t *s = calloc(1, sizeof *s);
	s->flags = flags;
	pthread_mutex_lock(&mu);
	s->next = streams;
	streams = s;
	live_streams++;
	pthread_mutex_unlock(&mu);
	pthread_create(&s->th, NULL, stream_main, s);
	*out = s;
	return OK;
}
/* The real driver returns at once and releases the stream when its work is
 * done; waiting here is the same as far as the caller can tell. */
CUresult cuStreamDestroy_v2(stream_t *s) {
	NEED_CTX();
	pthread_mutex_lock(&mu);
	drain(s);
	s->stop = 1;
	pthread_cond_broadcast(&cv);
	for (stream_t **p = &streams; *p; p = &(*p)->next) {
		if (*p == s) { *p = s->next; break; }
	}
	live_streams--;
	pthread_mutex_unlock(&mu);
	pthread_join(s->th, NULL);
	free(s);
	return OK;
}
CUresult cuStreamSynchronize(stream_t *s) {
	NEED_CTX();
	pthread_mutex_lock(&mu);
	drain(s);
	pthread_mutex_unlock(&mu);
	return OK;
}

CUresult cuEventCreate(event_t **e, unsigned int flags) {
	NEED_CTX();
	(void)flags;
	*e = calloc(1, sizeof **e);
	pthread_mutex_lock(&mu);
	live_events++;
	stat_events_created++;
	pthread_mutex_unlock(&mu);
	return OK;
}
CUresult cuEventRecord(event_t *e, stream_t *s) {
	NEED_CTX();
	if (!e || !s) return INVALID_HANDLE;
	pthread_mutex_lock(&mu);
	e->gen++;
	e->recorded = 1;
	stat_event_records++;
	if (inline_mode) {
		e->t = now_ms();
		e->done_gen = e->gen;
		pthread_mutex_unlock(&mu);
		return OK;
	}
	op_t *o = calloc(1, sizeof *o);
	o->kind = OP_EVENT; o->ev = e; o->gen = e->gen;
	enqueue(s, o);
	pthread_mutex_unlock(&mu);
	return OK;
}
/* Waits for the event's latest record; an event never recorded is done. */
CUresult cuEventSynchronize(event_t *e) {
	NEED_CTX();
	if (!e) return INVALID_HANDLE;
	pthread_mutex_lock(&mu);
	while (e->recorded && e->done_gen != e->gen) pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
	return OK;
}
CUresult cuEventElapsedTime(float *ms, event_t *a, event_t *b) {
	NEED_CTX();
	CUresult r = OK;
	pthread_mutex_lock(&mu);
	if (!a->recorded || !b->recorded) r = INVALID_HANDLE;
	else if (a->done_gen != a->gen || b->done_gen != b->gen) r = NOT_READY;
	else *ms = (float)(b->t - a->t);
	pthread_mutex_unlock(&mu);
	return r;
}
CUresult cuEventDestroy_v2(event_t *e) {
	NEED_CTX();
	pthread_mutex_lock(&mu);
	/* A record still queued would touch freed memory: wait for it. */
	while (e->recorded && e->done_gen != e->gen) pthread_cond_wait(&cv, &mu);
	live_events--;
	pthread_mutex_unlock(&mu);
	free(e);
	return OK;
}

/* For the tests. */
long fake_cuda_live(void) {
	pthread_mutex_lock(&mu);
	long n = live_device_allocs + live_host_allocs + live_registrations + live_events + live_streams;
	pthread_mutex_unlock(&mu);
	return n;
}
/* stats: async copies, bytes from pinned memory, bytes from pageable
 * memory, events created, event records. */
void fake_cuda_stats(long *out) {
	pthread_mutex_lock(&mu);
	out[0] = stat_async_copies;
	out[1] = stat_async_pinned_bytes;
	out[2] = stat_async_pageable_bytes;
	out[3] = stat_events_created;
	out[4] = stat_event_records;
	pthread_mutex_unlock(&mu);
}
/* Slow every stream's copies to bytes_per_ms (0: memcpy speed). */
void fake_cuda_set_rate(long bytes_per_ms) {
	pthread_mutex_lock(&mu);
	rate_bytes_per_ms = bytes_per_ms;
	pthread_mutex_unlock(&mu);
}
/* Inline mode: copies and event records complete inside the call, so
 * that a benchmark sees the backend's own cost, not the fake's threads.
 * Switch it only while no stream has work queued. */
void fake_cuda_set_inline(int on) {
	pthread_mutex_lock(&mu);
	inline_mode = on;
	pthread_mutex_unlock(&mu);
}
