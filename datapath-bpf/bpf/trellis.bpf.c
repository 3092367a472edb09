// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/* Socket-level redirection of service VIPs to the node proxy.
 *
 * connect4/connect6 (kernel >= 4.17): a TCP connect() to a VIP:port in
 *   trellis_svc is rewritten to the proxy's listener before routing, so the VIP
 *   never appears on a wire. The original destination is kept by socket cookie.
 * sockops (>= 4.13): at ACTIVE_ESTABLISHED the entry is re-keyed by the
 *   client's (address, port), which is the accepted socket's peer for the
 *   proxy, and removed again when the socket closes.
 * getsockopt (>= 5.3): SO_ORIGINAL_DST on the proxy's accepted socket answers
 *   from that entry, so the proxy makes the same call as after an nftables
 *   redirect.
 * getpeername4/6 (>= 5.8): the client sees the VIP as its peer.
 *
 * Logic lives in always-inline helpers (trellis_lb.h) so that it can also be
 * compiled into a test program and run with BPF_PROG_TEST_RUN. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "trellis_lb.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Shared by both connect hooks: decide, then rewrite the destination.
 * `family` is a literal at each call so that, once inlined, the other
 * family's branch is gone: connect4 may not even mention user_ip6. */
static __always_inline int trellis_connect(struct bpf_sock_addr *ctx, const struct trellis_svc_key *key,
					   const __u8 family)
{
	struct trellis_config *cfg = trellis_cfg_get();

	if (ctx->type != SOCK_STREAM || !cfg || !ctx->sk)
		return 1;
	switch (trellis_redirect(key, cfg, ctx->sk->mark, bpf_get_socket_cookie(ctx),
				 bpf_get_current_cgroup_id())) {
	case TRELLIS_REDIRECT:
		if (family == AF_INET) {
			ctx->user_ip4 = cfg->proxy4;
		} else if (key->family == AF_INET) {
			/* A v4 VIP through an IPv6 socket (::ffff:a.b.c.d): the
			 * proxy's v4 address, mapped the same way. */
			ctx->user_ip6[0] = 0;
			ctx->user_ip6[1] = 0;
			ctx->user_ip6[2] = bpf_htonl(0xffff);
			ctx->user_ip6[3] = cfg->proxy4;
		} else {
			ctx->user_ip6[0] = cfg->proxy6[0];
			ctx->user_ip6[1] = cfg->proxy6[1];
			ctx->user_ip6[2] = cfg->proxy6[2];
			ctx->user_ip6[3] = cfg->proxy6[3];
		}
		ctx->user_port = cfg->proxy_port;
		return 1;
	case TRELLIS_REFUSE:
		return 0; /* connect() fails with EPERM */
	default:
		return 1;
	}
}

SEC("cgroup/connect4")
int trellis_connect4(struct bpf_sock_addr *ctx)
{
	struct trellis_svc_key key = {
		.addr = { ctx->user_ip4 },
		.port = (__be16)ctx->user_port,
		.family = AF_INET,
	};

	return trellis_connect(ctx, &key, AF_INET);
}

/* Whether an IPv6 address is an IPv4 one mapped (::ffff:a.b.c.d). */
static __always_inline int trellis_v4_mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

SEC("cgroup/connect6")
int trellis_connect6(struct bpf_sock_addr *ctx)
{
	struct trellis_svc_key key = {
		.addr = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] },
		.port = (__be16)ctx->user_port,
		.family = AF_INET6,
	};

	/* Dual-stack clients (gRPC core, Java, ...) reach v4 VIPs through
	 * IPv6 sockets, and the kernel runs no connect4 for those. */
	if (trellis_v4_mapped(key.addr)) {
		key.addr[0] = key.addr[3];
		key.addr[1] = key.addr[2] = key.addr[3] = 0;
		key.family = AF_INET;
	}
	return trellis_connect(ctx, &key, AF_INET6);
}

SEC("cgroup/getpeername4")
int trellis_getpeername4(struct bpf_sock_addr *ctx)
{
	struct trellis_orig *o = bpf_map_lookup_elem(&trellis_cookie, &(__u64){ bpf_get_socket_cookie(ctx) });

	if (o && o->family == AF_INET) {
		ctx->user_ip4 = o->addr[0];
		ctx->user_port = o->port;
	}
	return 1;
}

SEC("cgroup/getpeername6")
int trellis_getpeername6(struct bpf_sock_addr *ctx)
{
	struct trellis_orig *o = bpf_map_lookup_elem(&trellis_cookie, &(__u64){ bpf_get_socket_cookie(ctx) });

	if (o && o->family == AF_INET) {
		/* A v4 VIP reached through an IPv6 socket: mapped back. */
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		ctx->user_ip6[3] = o->addr[0];
		ctx->user_port = o->port;
	} else if (o && o->family == AF_INET6) {
		ctx->user_ip6[0] = o->addr[0];
		ctx->user_ip6[1] = o->addr[1];
		ctx->user_ip6[2] = o->addr[2];
		ctx->user_ip6[3] = o->addr[3];
		ctx->user_port = o->port;
	}
	return 1;
}

SEC("sockops")
int trellis_sockops(struct bpf_sock_ops *skops)
{
	struct trellis_peer peer = {
		.port = skops->local_port,
		.family = skops->family,
	};
	__u64 cookie;

	if (skops->family == AF_INET) {
		peer.addr[0] = skops->local_ip4;
	} else if (skops->family == AF_INET6 && trellis_v4_mapped(skops->local_ip6)) {
		/* A mapped client is a v4 peer to the proxy's v4 listener. */
		peer.family = AF_INET;
		peer.addr[0] = skops->local_ip6[3];
	} else if (skops->family == AF_INET6) {
		peer.addr[0] = skops->local_ip6[0];
		peer.addr[1] = skops->local_ip6[1];
		peer.addr[2] = skops->local_ip6[2];
		peer.addr[3] = skops->local_ip6[3];
	} else {
		return 1;
	}

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
		cookie = bpf_get_socket_cookie(skops);
		struct trellis_orig *o = bpf_map_lookup_elem(&trellis_cookie, &cookie);
		if (!o)
			return 1;
		bpf_map_update_elem(&trellis_peer_orig, &peer, o, BPF_ANY);
		/* Ask for state changes so the entries go when the socket closes. */
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
		return 1;
	}
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE) {
			cookie = bpf_get_socket_cookie(skops);
			bpf_map_delete_elem(&trellis_peer_orig, &peer);
			bpf_map_delete_elem(&trellis_cookie, &cookie);
		}
		return 1;
	}
	return 1;
}

SEC("cgroup/getsockopt")
int trellis_getsockopt(struct bpf_sockopt *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct trellis_peer peer = {};
	struct trellis_orig *o;

	/* Everything but SO_ORIGINAL_DST passes through untouched. */
	if (ctx->optname != TRELLIS_SO_ORIGINAL_DST || !sk)
		return 1;
	if (ctx->level == SOL_IP && sk->family == AF_INET) {
		peer.addr[0] = sk->dst_ip4;
	} else if (ctx->level == SOL_IPV6 && sk->family == AF_INET6) {
		peer.addr[0] = sk->dst_ip6[0];
		peer.addr[1] = sk->dst_ip6[1];
		peer.addr[2] = sk->dst_ip6[2];
		peer.addr[3] = sk->dst_ip6[3];
	} else {
		return 1;
	}
	peer.port = bpf_ntohs(sk->dst_port);
	peer.family = sk->family;
	o = bpf_map_lookup_elem(&trellis_peer_orig, &peer);
	if (!o)
		return 1;
	return trellis_write_orig(ctx, o);
}
