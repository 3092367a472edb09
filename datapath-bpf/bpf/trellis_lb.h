/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* Maps and always-inline logic of the socket load balancer. */
#ifndef TRELLIS_LB_H
#define TRELLIS_LB_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "trellis.h"

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOL_IP 0
#define SOL_IPV6 41
/* SO_ORIGINAL_DST (linux/netfilter_ipv4.h) == IP6T_SO_ORIGINAL_DST */
#define TRELLIS_SO_ORIGINAL_DST 80

/* Maps are pinned by name; the test object (trellis_test.bpf.c) turns that
 * off so that its maps never meet the real ones. */
#ifndef TRELLIS_PIN
#define TRELLIS_PIN LIBBPF_PIN_BY_NAME
#endif

/* Set on the (VIP, port 0) entry the loader adds for every VIP: a connect to
 * a port the service does not listen on fails at once instead of hanging. */
#define TRELLIS_SVC_VIP_ONLY 1

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TRELLIS_MAX_SERVICES);
	__type(key, struct trellis_svc_key);
	__type(value, struct trellis_svc_value);
	__uint(pinning, TRELLIS_PIN);
} trellis_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct trellis_config);
	__uint(pinning, TRELLIS_PIN);
} trellis_cfg SEC(".maps");

/* socket cookie -> original destination, for getpeername and sockops. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TRELLIS_MAX_FLOWS);
	__type(key, __u64);
	__type(value, struct trellis_orig);
	__uint(pinning, TRELLIS_PIN);
} trellis_cookie SEC(".maps");

/* client (address, port) -> original destination, for SO_ORIGINAL_DST. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TRELLIS_MAX_FLOWS);
	__type(key, struct trellis_peer);
	__type(value, struct trellis_orig);
	__uint(pinning, TRELLIS_PIN);
} trellis_peer_orig SEC(".maps");

/* Per-service counters, indexed by trellis_svc_value.id. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TRELLIS_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct trellis_stats);
	__uint(pinning, TRELLIS_PIN);
} trellis_stats SEC(".maps");

/* Never read by the programs; it travels with the pins (see trellis.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct trellis_meta);
	__uint(pinning, TRELLIS_PIN);
} trellis_meta SEC(".maps");

struct trellis_sockaddr_in {
	__u16 family;
	__be16 port;
	__be32 addr;
	__u8 zero[8];
};

struct trellis_sockaddr_in6 {
	__u16 family;
	__be16 port;
	__u32 flowinfo;
	__be32 addr[4];
	__u32 scope_id;
};

static __always_inline struct trellis_config *trellis_cfg_get(void)
{
	return bpf_map_lookup_elem(&trellis_cfg, &(__u32){ 0 });
}

enum trellis_verdict {
	TRELLIS_PASS = 0,     /* not ours: leave the connect alone */
	TRELLIS_REDIRECT = 1, /* rewrite to the proxy */
	TRELLIS_REFUSE = 2,   /* a VIP on a port no listener has: fail the connect */
};

/* Decides what to do with a connect() to key; on REDIRECT records the
 * original destination and the caller's cgroup under the socket's cookie. */
static __always_inline enum trellis_verdict
trellis_redirect(const struct trellis_svc_key *key, const struct trellis_config *cfg, __u32 mark,
		 __u64 cookie, __u64 cgroup)
{
	struct trellis_svc_value *svc;
	struct trellis_stats *st;
	struct trellis_orig orig = {};
	struct trellis_svc_key vip;

	/* The proxy's own upstream connections are never redirected. */
	if (cfg->proxy_mark && mark == cfg->proxy_mark)
		return TRELLIS_PASS;

	svc = bpf_map_lookup_elem(&trellis_svc, key);
	if (!svc) {
		vip = *key;
		vip.port = 0;
		svc = bpf_map_lookup_elem(&trellis_svc, &vip);
		if (!svc || !(svc->flags & TRELLIS_SVC_VIP_ONLY))
			return TRELLIS_PASS;
		st = bpf_map_lookup_elem(&trellis_stats, &svc->id);
		if (st)
			__sync_fetch_and_add(&st->refused, 1);
		return TRELLIS_REFUSE;
	}

	__builtin_memcpy(orig.addr, key->addr, sizeof(orig.addr));
	orig.port = key->port;
	orig.family = key->family;
	orig.cgroup = cgroup;
	bpf_map_update_elem(&trellis_cookie, &cookie, &orig, BPF_ANY);
	st = bpf_map_lookup_elem(&trellis_stats, &svc->id);
	if (st)
		__sync_fetch_and_add(&st->redirected, 1);
	return TRELLIS_REDIRECT;
}

/* Answers SO_ORIGINAL_DST with o, if the caller's buffer holds a sockaddr. */
static __always_inline int trellis_write_orig(struct bpf_sockopt *ctx, const struct trellis_orig *o)
{
	if (o->family == AF_INET) {
		struct trellis_sockaddr_in *sa = ctx->optval;

		if ((void *)(sa + 1) > ctx->optval_end)
			return 1;
		sa->family = AF_INET;
		sa->port = o->port;
		sa->addr = o->addr[0];
		__builtin_memset(sa->zero, 0, sizeof(sa->zero));
		ctx->optlen = sizeof(*sa);
	} else {
		struct trellis_sockaddr_in6 *sa = ctx->optval;

		if ((void *)(sa + 1) > ctx->optval_end)
			return 1;
		sa->family = AF_INET6;
		sa->port = o->port;
		sa->flowinfo = 0;
		__builtin_memcpy(sa->addr, o->addr, sizeof(sa->addr));
		sa->scope_id = 0;
		ctx->optlen = sizeof(*sa);
	}
	ctx->retval = 0;
	return 1;
}

#endif
