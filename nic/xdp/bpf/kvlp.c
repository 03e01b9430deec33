// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// kvlp.c: the XDP responder of KVLP (docs/protocol.md). It answers HINT
// messages from the hot index the control plane pushes into kvlp_index,
// reports every hit to the daemon's prefetcher through the kvlp_events ring
// buffer, and passes everything that is not KVLP to the kernel stack.
//
// Layout constants are those of nic/wire; the Go tests check both agree by
// comparing this program's replies byte for byte with wire.Answer's.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define KVLP_MAGIC 0x4B56
#define KVLP_VERSION 1
#define KVLP_TYPE_HINT 1
#define KVLP_TYPE_REPLY 2
#define KVLP_FLAG_NO_REPLY 0x01
#define KVLP_KNOWN_FLAGS KVLP_FLAG_NO_REPLY
#define KVLP_HEADER_LEN 48
#define KVLP_ENTRY_LEN 12
#define KVLP_MAX_ENTRIES 128
#define REPLY_TTL 64
// Entry 0 sits at most this far into a frame: Ethernet, IPv4 with options
// (60) or IPv6 (40), UDP and the KVLP header.
#define MAX_ENTRIES_OFF (14 + 60 + 8 + KVLP_HEADER_LEN)

// kvlp_port is the UDP port KVLP runs on, in host order. It lives in .data
// so that the Go side sets it (xdp.Options.Port) after the collection is
// loaded by bitstream's xdp loader and before the program is attached.
volatile __u16 kvlp_port = 7470;

// kvlp_generic is 1 when the program is attached in generic (skb) mode. It
// tells the program that a hint sent by a local stack through a veth (its
// UDP checksum field still holding only the pseudo-header sum, the skb
// marked CHECKSUM_PARTIAL) keeps that metadata on its way back out, so the
// field must stay a pseudo-header sum.
volatile __u8 kvlp_generic = 0;

// The hot index: (salt id, fingerprint) -> the chunk holding the anchor.
struct kvlp_key {
	__u64 salt_id;
	__u64 fingerprint;
};

struct kvlp_value {
	__u8 chunk_key[16]; // matcher.ChunkKey
	__u32 chunk_offset; // anchor's token offset inside the chunk
	__u32 flags;        // reserved, zero
};

// Ring-buffer records. Every hit of a hint gets a KVLP_EVENT_HIT record and
// a hint with hits then gets one KVLP_EVENT_DONE record. Wakeups are what
// the records cost most (an irq_work, a self-interrupt: microseconds in a
// VM), so only the hint's first hit record and its done record may wake the
// reader, and only if it had caught up (the kernel's adaptive
// notification); the others are submitted with BPF_RB_NO_WAKEUP. A reader
// that drained the first hit before the rest arrived is woken again by the
// done record. A busy reader is never woken; a hint without hits touches
// the ring not at all.
#define KVLP_EVENT_HIT 1
#define KVLP_EVENT_DONE 2

// One hit, for the prefetcher.
struct kvlp_event {
	__u32 kind; // KVLP_EVENT_HIT
	__u32 ifindex;
	__u64 request_id;
	__u64 salt_id;
	__u64 fingerprint;
	__u8 chunk_key[16];
	__u32 token_offset;
	__u32 chunk_offset;
	__u16 frag_index;
	__u16 entry;
	__u32 reserved;
	__u64 timestamp_ns;
};

// The end of one hint's hits.
struct kvlp_done {
	__u32 kind; // KVLP_EVENT_DONE
	__u32 ifindex;
	__u64 request_id;
	__u64 salt_id;
	__u16 frag_index;
	__u16 frag_count;
	__u16 entries;
	__u16 hits;
	__u32 events; // hit records written (hits minus those lost to a full ring)
	__u32 reserved;
	__u64 timestamp_ns;
};

// One counter per outcome; nic/xdp names them from this enum (bpf2go).
enum kvlp_counter {
	KVLP_PASS_NOT_IP,        // not IPv4/IPv6 (ARP, VLAN-tagged, ...)
	KVLP_PASS_NOT_UDP,       // another transport, or IPv6 extension headers
	KVLP_PASS_SHORT,         // Ethernet, IP or UDP header cut short
	KVLP_PASS_IP_FRAGMENT,   // IPv4 fragment
	KVLP_PASS_IP_CHECKSUM,   // IPv4 header checksum wrong (the stack drops it)
	KVLP_PASS_OTHER_PORT,    // UDP to another port
	KVLP_PASS_REPLY,         // a well-formed HINT_REPLY addressed to this host
	KVLP_HINT_REPLIED,       // HINT answered with XDP_TX
	KVLP_HINT_CONSUMED,      // HINT with NO_REPLY, dropped after its events
	KVLP_LOOKUPS,            // fingerprints looked up
	KVLP_HITS,               // fingerprints found
	KVLP_EVENTS,             // events written to the ring buffer
	KVLP_EVENTS_LOST,        // events lost to a full ring buffer
	KVLP_DONE_LOST,          // end-of-hint records lost to a full ring buffer
	KVLP_DROP_UDP_LENGTH,    // UDP length < 8, past the frame or the IP payload
	KVLP_DROP_UDP_CHECKSUM,  // IPv6 UDP without a checksum
	KVLP_DROP_TRUNCATED,     // KVLP header or entries past the datagram
	KVLP_DROP_MAGIC,
	KVLP_DROP_VERSION,
	KVLP_DROP_TYPE,
	KVLP_DROP_COUNT,
	KVLP_DROP_LENGTH,
	KVLP_DROP_FLAGS,
	KVLP_DROP_FRAGMENT,
	KVLP_DROP_RESERVED,
	KVLP_COUNTER_MAX,
};

struct kvlp_hdr {
	__be16 magic;
	__u8 version;
	__u8 type;
	__be16 length;
	__u8 count;
	__u8 flags;
	__be64 request_id;
	__be64 salt_id;
	__be16 frag_index;
	__be16 frag_count;
	__be16 hits;
	__be16 reserved;
	__u64 bitmap[2]; // bit i = byte i/8, bit i%8: the same bit of a little-endian u64
};

// Entries are read as three 32-bit words so that the checksum update can sum
// them as they sit in the packet.
struct kvlp_entry {
	__be32 id_hi;
	__be32 id_lo;
	__be32 offset;
};

_Static_assert(sizeof(struct kvlp_hdr) == KVLP_HEADER_LEN, "KVLP header is 48 bytes");
_Static_assert(sizeof(struct kvlp_entry) == KVLP_ENTRY_LEN, "KVLP entry is 12 bytes");
_Static_assert(sizeof(struct kvlp_event) == 72, "hit record is 72 bytes");
_Static_assert(sizeof(struct kvlp_done) == 48, "done record is 48 bytes");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct kvlp_key);
	__type(value, struct kvlp_value);
	__uint(max_entries, 65536); // the loader sets the table capacity
} kvlp_index SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20); // bytes; the loader may resize it
} kvlp_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, KVLP_COUNTER_MAX);
} kvlp_counters SEC(".maps");

// Referenced so that bpf2go emits Go types for them.
const struct kvlp_event *kvlp_event_type __attribute__((unused));
const struct kvlp_done *kvlp_done_type __attribute__((unused));
const enum kvlp_counter *kvlp_counter_type __attribute__((unused));

static __always_inline void count_n(__u32 c, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&kvlp_counters, &c);
	if (v)
		*v += n; // per-CPU slot: no other CPU writes it
}

static __always_inline int pass(__u32 c)
{
	count_n(c, 1);
	return XDP_PASS;
}

static __always_inline int drop(__u32 c)
{
	count_n(c, 1);
	return XDP_DROP;
}

// Folds a ones'-complement sum kept in 64 bits to 16 bits.
static __always_inline __u16 csum_fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

// Applies a change to a checksum (RFC 1624, eqn. 3), for the IPv4 header's
// TTL: diff holds the sum of the new words plus the complement of the old.
static __always_inline __u16 csum_update(__u16 check, __u64 diff)
{
	return ~csum_fold((__u64)(__u16)~check + diff);
}

static __always_inline __u64 w32(const void *p)
{
	return *(const __u32 *)p;
}


static __always_inline void swap_mac(struct ethhdr *eth)
{
	__u8 tmp[ETH_ALEN];
	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
}

// mask returns v & m computed by the BPF instruction itself. After a range
// check it changes nothing, but clang cannot drop it, so the verifier sees
// the bound on the very register that is added to the packet pointer
// (clang otherwise checks one copy of a value and uses another).
static __always_inline __u64 mask(__u64 v, const __u64 m)
{
	asm volatile("%[v] &= %[m]" : [v] "+r"(v) : [m] "i"(m));
	return v;
}

// State of the entry loop, on the program's stack.
struct entry_loop {
	struct xdp_md *ctx;
	__u32 entries_off; // offset of entry 0 from the frame's start
	__u16 frag_index;
	__u16 frag_count;
	__u64 salt_id;
	__u64 request_id;
	__u64 now;
	__u64 bitmap_lo; // entries 0..63
	__u64 bitmap_hi; // entries 64..127
	__u64 sum;  // ones'-complement sum of the rewritten entries, in 32-bit words
	__u64 hits;
	__u64 events;
	__u64 lost;
	__u32 done;   // entries answered
	__u8 rewrite; // turn the entries into the reply's (not for NO_REPLY)
	__u64 wake;      // BPF_RB_FORCE_WAKEUP once a hit was seen: the hint gets a done record
	__u64 hit_flags; // 0 (adaptive) for the hint's first hit record, then BPF_RB_NO_WAKEUP
};

// answer_entry looks entry i up, reports a hit to the ring buffer, and
// (unless the hint asked for no reply) rewrites the entry into its reply
// form. It re-derives its packet pointers
// from the context, so the verifier checks this body once rather than once
// per entry. Returning 1 stops the loop early, which the caller treats as a
// malformed packet.
static long answer_entry(__u32 i, struct entry_loop *lc)
{
	void *data = (void *)(long)lc->ctx->data;
	void *data_end = (void *)(long)lc->ctx->data_end;
	__u32 off = lc->entries_off;

	if (i >= KVLP_MAX_ENTRIES || off > MAX_ENTRIES_OFF)
		return 1;
	__u64 pos = mask(off, 0xff) + mask(i, KVLP_MAX_ENTRIES - 1) * KVLP_ENTRY_LEN;
	struct kvlp_entry *e = data + pos;
	if ((void *)(e + 1) > data_end)
		return 1;
	struct kvlp_key key = {
		.salt_id = lc->salt_id,
		.fingerprint = (__u64)bpf_ntohl(e->id_hi) << 32 | bpf_ntohl(e->id_lo),
	};
	struct kvlp_value *v = bpf_map_lookup_elem(&kvlp_index, &key);
	if (v) {
		lc->hits++;
		lc->wake = BPF_RB_FORCE_WAKEUP;
		if (i < 64)
			lc->bitmap_lo |= 1ULL << i;
		else
			lc->bitmap_hi |= 1ULL << (i - 64);
		struct kvlp_event *ev = bpf_ringbuf_reserve(&kvlp_events, sizeof(*ev), 0);
		if (ev) {
			ev->kind = KVLP_EVENT_HIT;
			ev->reserved = 0;
			ev->request_id = lc->request_id;
			ev->salt_id = key.salt_id;
			ev->fingerprint = key.fingerprint;
			__builtin_memcpy(ev->chunk_key, v->chunk_key, sizeof(ev->chunk_key));
			ev->token_offset = bpf_ntohl(e->offset);
			ev->chunk_offset = v->chunk_offset;
			ev->frag_index = lc->frag_index;
			ev->entry = i;
			ev->ifindex = lc->ctx->ingress_ifindex;
			ev->timestamp_ns = lc->now;
			bpf_ringbuf_submit(ev, lc->hit_flags);
			lc->hit_flags = BPF_RB_NO_WAKEUP;
			lc->events++;
		} else {
			lc->lost++;
		}
	}
	if (lc->rewrite) {
		if (v) {
			// The chunk id is the key's first 8 bytes as they are.
			e->id_hi = *(__u32 *)&v->chunk_key[0];
			e->id_lo = *(__u32 *)&v->chunk_key[4];
			e->offset = bpf_htonl(v->chunk_offset);
		} else {
			e->id_hi = 0;
			e->id_lo = 0;
			e->offset = 0;
		}
		lc->sum += w32(&e->id_hi) + w32(&e->id_lo) + w32(&e->offset);
	}
	lc->done++;
	return 0;
}

SEC("xdp")
int kvlp_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct udphdr *udp;
	int v6;
	__u32 ip_payload;

	if ((void *)(eth + 1) > data_end)
		return pass(KVLP_PASS_SHORT);

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip4 = (void *)(eth + 1);
		v6 = 0;
		if ((void *)(ip4 + 1) > data_end)
			return pass(KVLP_PASS_SHORT);
		__u32 ihl = ip4->ihl;
		if (ip4->version != 4 || ihl < 5)
			return pass(KVLP_PASS_NOT_IP);
		if ((void *)ip4 + ihl * 4 > data_end)
			return pass(KVLP_PASS_SHORT);
		if (ip4->frag_off & bpf_htons(0x3fff)) // MF or an offset
			return pass(KVLP_PASS_IP_FRAGMENT);
		if (ip4->protocol != IPPROTO_UDP)
			return pass(KVLP_PASS_NOT_UDP);
		// Verify the header checksum, so that the incremental update of
		// the reply's is exact. Unrolled: each word's bound is a constant.
		__u64 sum = 0;
#pragma unroll
		for (__u32 i = 0; i < 15; i++) {
			__u32 *w = (__u32 *)ip4 + i;
			if (i >= ihl)
				break;
			if ((void *)(w + 1) > data_end)
				return pass(KVLP_PASS_SHORT);
			sum += *w;
		}
		if (csum_fold(sum) != 0xffff)
			return pass(KVLP_PASS_IP_CHECKSUM);
		__u32 tot = bpf_ntohs(ip4->tot_len);
		if (tot < ihl * 4)
			return pass(KVLP_PASS_SHORT);
		ip_payload = tot - ihl * 4;
		udp = (void *)ip4 + ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		v6 = 1;
		if ((void *)(ip6 + 1) > data_end)
			return pass(KVLP_PASS_SHORT);
		if (ip6->version != 6)
			return pass(KVLP_PASS_NOT_IP);
		if (ip6->nexthdr != IPPROTO_UDP) // extension headers are not parsed
			return pass(KVLP_PASS_NOT_UDP);
		ip_payload = bpf_ntohs(ip6->payload_len);
		udp = (void *)(ip6 + 1);
	} else {
		return pass(KVLP_PASS_NOT_IP);
	}

	if ((void *)(udp + 1) > data_end)
		return pass(KVLP_PASS_SHORT);
	if (udp->dest != bpf_htons(kvlp_port))
		return pass(KVLP_PASS_OTHER_PORT);

	// From here on the datagram is addressed to KVLP: anything malformed is
	// dropped and counted.
	__u32 ulen = bpf_ntohs(udp->len);
	if (ulen < sizeof(*udp) || ulen > ip_payload || (void *)udp + ulen > data_end)
		return drop(KVLP_DROP_UDP_LENGTH);
	if (v6 && udp->check == 0)
		return drop(KVLP_DROP_UDP_CHECKSUM);
	__u32 plen = ulen - sizeof(*udp);
	struct kvlp_hdr *h = (void *)(udp + 1);
	if (plen < KVLP_HEADER_LEN || (void *)(h + 1) > data_end)
		return drop(KVLP_DROP_TRUNCATED);
	if (h->magic != bpf_htons(KVLP_MAGIC))
		return drop(KVLP_DROP_MAGIC);
	if (h->version != KVLP_VERSION)
		return drop(KVLP_DROP_VERSION);
	if (h->type != KVLP_TYPE_HINT && h->type != KVLP_TYPE_REPLY)
		return drop(KVLP_DROP_TYPE);
	__u32 count = h->count;
	if (count < 1 || count > KVLP_MAX_ENTRIES)
		return drop(KVLP_DROP_COUNT);
	__u32 length = bpf_ntohs(h->length);
	if (length != KVLP_HEADER_LEN + count * KVLP_ENTRY_LEN)
		return drop(KVLP_DROP_LENGTH);
	if (h->flags & ~KVLP_KNOWN_FLAGS)
		return drop(KVLP_DROP_FLAGS);
	__u16 frag_index = bpf_ntohs(h->frag_index);
	__u16 frag_count = bpf_ntohs(h->frag_count);
	if (frag_count == 0 || frag_index >= frag_count)
		return drop(KVLP_DROP_FRAGMENT);
	if (h->reserved != 0)
		return drop(KVLP_DROP_RESERVED);
	if (length > plen)
		return drop(KVLP_DROP_TRUNCATED);
	if (length != plen)
		return drop(KVLP_DROP_LENGTH);
	if (h->type == KVLP_TYPE_REPLY)
		return pass(KVLP_PASS_REPLY);
	if (h->hits != 0 || h->bitmap[0] != 0 || h->bitmap[1] != 0)
		return drop(KVLP_DROP_RESERVED);

	// A well-formed HINT: look every anchor up, record the hits and rewrite
	// the entries in place into the reply's (one bpf_loop step each).
	struct entry_loop lc = {
		.ctx = ctx,
		.entries_off = (void *)(h + 1) - data,
		.salt_id = bpf_be64_to_cpu(h->salt_id),
		.request_id = bpf_be64_to_cpu(h->request_id),
		.now = bpf_ktime_get_ns(),
		.frag_index = frag_index,
		.frag_count = frag_count,
		.rewrite = !(h->flags & KVLP_FLAG_NO_REPLY),
		.wake = BPF_RB_NO_WAKEUP,
		.hit_flags = 0,
	};
	bpf_loop(count, answer_entry, &lc, 0);
	if (lc.done != count) // an entry past the frame: unreachable after the length checks
		return drop(KVLP_DROP_TRUNCATED);
	count_n(KVLP_LOOKUPS, count);
	count_n(KVLP_HITS, lc.hits);
	count_n(KVLP_EVENTS, lc.events);
	count_n(KVLP_EVENTS_LOST, lc.lost);
	if (lc.wake == BPF_RB_FORCE_WAKEUP) {
		// A hint with hits gets its done record. The test is on lc.wake, one of two constants, not on the hit
		// count: the verifier would have to track every count apart and
		// could no longer merge the loop's paths.
		struct kvlp_done *done = bpf_ringbuf_reserve(&kvlp_events, sizeof(*done), 0);
		if (done) {
			done->kind = KVLP_EVENT_DONE;
			done->ifindex = ctx->ingress_ifindex;
			done->request_id = lc.request_id;
			done->salt_id = lc.salt_id;
			done->frag_index = frag_index;
			done->frag_count = frag_count;
			done->entries = count;
			done->hits = lc.hits;
			done->events = lc.events;
			done->reserved = 0;
			done->timestamp_ns = lc.now;
			bpf_ringbuf_submit(done, 0); // wakes the reader if it had caught up
		} else {
			count_n(KVLP_DONE_LOST, 1);
		}
	}

	if (h->flags & KVLP_FLAG_NO_REPLY)
		return drop(KVLP_HINT_CONSUMED);

	h->type = KVLP_TYPE_REPLY;
	h->hits = bpf_htons((__u16)lc.hits);
	h->bitmap[0] = lc.bitmap_lo;
	h->bitmap[1] = lc.bitmap_hi;

	// The UDP checksum is computed afresh: pseudo-header, UDP header and
	// the whole reply. The entries' words were summed as they were written,
	// so this costs the header's 12 words. Sums are taken on words as they
	// sit in memory, which is correct in either byte order as long as the
	// checksum field is read and written the same way (RFC 1071, 2(B)).
	// Swapping addresses and ports does not change the pseudo-header sum.
	// The IP header is found again from the Ethernet header: clang would
	// otherwise merge the two header pointers into one the verifier cannot
	// type.
	struct iphdr *ip4 = (void *)(eth + 1);
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	__u64 pseudo = (__u64)bpf_htons(IPPROTO_UDP) + udp->len;
	if (!v6) {
		if ((void *)(ip4 + 1) > data_end)
			return drop(KVLP_DROP_TRUNCATED); // unreachable: parsed above
		pseudo += w32(&ip4->saddr) + w32(&ip4->daddr);
	} else {
		if ((void *)(ip6 + 1) > data_end)
			return drop(KVLP_DROP_TRUNCATED);
		__u32 *a = (__u32 *)&ip6->saddr; // saddr and daddr: 8 words
#pragma unroll
		for (int i = 0; i < 8; i++)
			pseudo += a[i];
	}
	__u64 sum = pseudo + lc.sum + w32(udp) + udp->len; // ports, length; the checksum counts as 0
	__u32 *hw = (__u32 *)h;
#pragma unroll
	for (int i = 0; i < KVLP_HEADER_LEN / 4; i++)
		sum += hw[i];
	if (udp->check == 0) {
		// An IPv4 hint sent without a checksum is answered without one.
	} else if (kvlp_generic && udp->check == csum_fold(pseudo)) {
		// A local sender's CHECKSUM_PARTIAL hint: the skb is finished by
		// whoever checksums it next, from this pseudo-header sum.
	} else {
		__u16 c = ~csum_fold(sum);
		udp->check = c ? c : 0xffff; // zero means "no checksum" (RFC 768)
	}

	swap_mac(eth);
	__be16 port = udp->source;
	udp->source = udp->dest;
	udp->dest = port;

	if (!v6) {
		if ((void *)(ip4 + 1) > data_end)
			return drop(KVLP_DROP_TRUNCATED);
		__be32 a = ip4->saddr;
		ip4->saddr = ip4->daddr;
		ip4->daddr = a;
		__u16 *ttl_word = (void *)&ip4->ttl; // ttl and protocol
		__u64 d = (__u16)~*ttl_word;
		ip4->ttl = REPLY_TTL;
		d += *ttl_word;
		ip4->check = csum_update(ip4->check, d);
	} else {
		if ((void *)(ip6 + 1) > data_end)
			return drop(KVLP_DROP_TRUNCATED);
		struct in6_addr a = ip6->saddr;
		ip6->saddr = ip6->daddr;
		ip6->daddr = a;
		ip6->hop_limit = REPLY_TTL;
	}
	count_n(KVLP_HINT_REPLIED, 1);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
