/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* The ABI between the eBPF programs and the Rust loader (datapath-bpf/src/abi.rs
 * mirrors every struct here, with compile-time size checks). Bump
 * TRELLIS_ABI_VERSION whenever a map's layout or meaning changes: an agent
 * finding pins of another version replaces them instead of reusing them. */
#ifndef TRELLIS_H
#define TRELLIS_H

#include <linux/types.h>

#define TRELLIS_ABI_VERSION 2

#define TRELLIS_MAX_SERVICES 65536
#define TRELLIS_MAX_FLOWS 262144

/* A service VIP and port. Addresses and ports in network byte order; an
 * IPv4 VIP uses addr[0] only. */
struct trellis_svc_key {
	__be32 addr[4];
	__be16 port;
	__u8 family; /* AF_INET or AF_INET6 */
	__u8 pad;
};

struct trellis_svc_value {
	__u32 id; /* index into trellis_stats; 0 is reserved */
	__u32 flags;
};

/* Where redirected connections go, and who is never redirected. */
struct trellis_config {
	__be32 proxy4;
	__be32 proxy6[4];
	__be16 proxy_port; /* network byte order */
	__u16 pad;
	__u32 proxy_mark; /* sockets with this SO_MARK are never redirected */
};

/* A connection's original destination: what the client asked for, and
 * who asked (the connecting process's cgroup v2 id: its directory's inode). */
struct trellis_orig {
	__be32 addr[4];
	__be16 port;
	__u8 family;
	__u8 pad;
	__u32 pad2;
	__u64 cgroup;
};

/* A client endpoint as the proxy sees it from its accepted socket. Address
 * in network byte order, port in host byte order (as sock_ops reports it). */
struct trellis_peer {
	__be32 addr[4];
	__u32 port;
	__u32 family;
};

/* Who owns the pins: read by a starting agent before it loads anything, so
 * this layout never changes, whatever TRELLIS_ABI_VERSION says. */
struct trellis_meta {
	__u32 abi;
	__u32 pad;
	__u64 object;    /* digest of the loaded object file */
	__u64 cgroup_id; /* inode of the cgroup the links are attached to */
};

struct trellis_stats {
	__u64 redirected;
	__u64 refused; /* connects to the VIP on a port it does not listen on */
};

#endif
