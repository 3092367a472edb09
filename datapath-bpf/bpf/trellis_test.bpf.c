// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/* Program-level tests of the socket LB logic. cgroup sock_addr programs
 * cannot be run with BPF_PROG_TEST_RUN, so, as Cilium does, the same
 * always-inline helpers are compiled into an XDP program that reads a fake
 * connect() context from the packet and writes the verdict back into it. */

#define TRELLIS_PIN LIBBPF_PIN_NONE
#include "trellis_lb.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Mirrored by datapath-bpf/tests/logic.rs. */
struct trellis_test_case {
	struct trellis_svc_key key;
	__u32 mark;
	__u64 cookie;
	__u32 verdict; /* out: enum trellis_verdict */
	__u32 pad;
	__u64 cgroup;
};

SEC("xdp")
int trellis_test_redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct trellis_test_case *tc = data;
	struct trellis_svc_key key;
	struct trellis_config *cfg;

	if ((void *)(tc + 1) > end)
		return XDP_ABORTED;
	cfg = trellis_cfg_get();
	if (!cfg)
		return XDP_ABORTED;
	__builtin_memcpy(&key, &tc->key, sizeof(key));
	tc->verdict = trellis_redirect(&key, cfg, tc->mark, tc->cookie, tc->cgroup);
	return XDP_PASS;
}
