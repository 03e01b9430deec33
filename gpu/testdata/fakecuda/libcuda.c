/*
 * A stand-in for libcuda.so.1 used by gpu's tests on machines without a
 * GPU. It implements the driver functions the CUDA backend binds, with the
 * C signatures of cuda.h, on host memory: "device" memory is malloc'ed,
 * copies are memcpy, streams are synchronous and events record a
 * monotonic timestamp. It exercises the purego bindings (symbol names,
 * argument order and types, out-parameters) and the backend's staging and
 * completion logic; it says nothing about real DMA speed.
 *
 * Built by the test with: cc -shared -fPIC -o libcuda.so.1 libcuda.c
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct { int current; } ctx_t;
typedef struct { int flags; } stream_t;
typedef struct { double t; int recorded; } event_t;

enum { OK = 0, INVALID_VALUE = 1, OUT_OF_MEMORY = 2, NOT_INITIALIZED = 3, INVALID_CONTEXT = 201, INVALID_DEVICE = 101 };

static int initialized;
static ctx_t primary;
static __thread ctx_t *current; /* CUDA contexts are current per thread */
static long live_device_allocs, live_host_allocs, live_registrations, live_events, live_streams;

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

#define NEED_INIT() do { if (!initialized) return NOT_INITIALIZED; } while (0)
#define NEED_CTX() do { NEED_INIT(); if (current != &primary) return INVALID_CONTEXT; } while (0)

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
	live_device_allocs++;
	*p = (CUdeviceptr)(uintptr_t)m;
	return OK;
}
CUresult cuMemFree_v2(CUdeviceptr p) { NEED_CTX(); free((void *)(uintptr_t)p); live_device_allocs--; return OK; }
CUresult cuMemHostAlloc(void **pp, size_t n, unsigned int flags) {
	NEED_CTX();
	(void)flags;
	*pp = malloc(n);
	if (!*pp) return OUT_OF_MEMORY;
	live_host_allocs++;
	return OK;
}
CUresult cuMemFreeHost(void *p) { NEED_CTX(); free(p); live_host_allocs--; return OK; }
CUresult cuMemHostRegister_v2(void *p, size_t n, unsigned int flags) { NEED_CTX(); if (!p || n == 0 || flags > 7) return INVALID_VALUE; live_registrations++; return OK; }
CUresult cuMemHostUnregister(void *p) { NEED_CTX(); if (!p) return INVALID_VALUE; live_registrations--; return OK; }
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) { NEED_CTX(); memcpy((void *)(uintptr_t)dst, src, n); return OK; }
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, stream_t *s) {
	NEED_CTX();
	if (!s) return INVALID_VALUE; /* the backend always uses its own stream */
	memcpy((void *)(uintptr_t)dst, src, n);
	return OK;
}
CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) { NEED_CTX(); memcpy(dst, (void *)(uintptr_t)src, n); return OK; }
CUresult cuStreamCreate(stream_t **s, unsigned int flags) { NEED_CTX(); *s = malloc(sizeof **s); (*s)->flags = flags; live_streams++; return OK; }
CUresult cuStreamDestroy_v2(stream_t *s) { NEED_CTX(); free(s); live_streams--; return OK; }
CUresult cuStreamSynchronize(stream_t *s) { NEED_CTX(); (void)s; return OK; }
CUresult cuEventCreate(event_t **e, unsigned int flags) { NEED_CTX(); (void)flags; *e = calloc(1, sizeof **e); live_events++; return OK; }
CUresult cuEventRecord(event_t *e, stream_t *s) { NEED_CTX(); (void)s; e->t = now(); e->recorded = 1; return OK; }
CUresult cuEventSynchronize(event_t *e) { NEED_CTX(); return e->recorded ? OK : INVALID_VALUE; }
CUresult cuEventElapsedTime(float *ms, event_t *a, event_t *b) { NEED_CTX(); *ms = (float)(b->t - a->t); return OK; }
CUresult cuEventDestroy_v2(event_t *e) { NEED_CTX(); free(e); live_events--; return OK; }

/* For the test: what is still allocated. */
long fake_cuda_live(void) { return live_device_allocs + live_host_allocs + live_registrations + live_events + live_streams; }
