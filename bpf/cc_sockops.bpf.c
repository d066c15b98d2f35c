/* cc_sockops: per-connection congestion control by port, from a cgroup v2 sockops hook.
 *
 * Attached (as a pinned BPF link) to a cgroup v2 directory; for every TCP connection of a
 * process in that cgroup whose local or remote port is CC_PORT (or CC_PORT2), it sets
 * TCP_CONGESTION to CC_NAME with bpf_setsockopt. Other connections keep the netns default.
 * Connections that existed before the attachment keep their algorithm: sockops callbacks run
 * only at connect / establish time.
 *
 * Parameters (-D): CC_NAME (token, e.g. bbr), CC_PORT, CC_PORT2 (0: unused), CC_ALL_PORTS
 * (1: ignore ports — cgroup scope). Stable ABI only: struct bpf_sock_ops + helpers.
 */
#include <uapi/linux/bpf.h>
#include "netdiag.h"

#ifndef CC_NAME
#error "CC_NAME must be given (-DCC_NAME=bbr)"
#endif
#ifndef CC_PORT
#define CC_PORT 0
#endif
#ifndef CC_PORT2
#define CC_PORT2 0
#endif
#ifndef CC_ALL_PORTS
#define CC_ALL_PORTS 0
#endif

#define ND_SOL_TCP 6
#define ND_TCP_CONGESTION 13
#define ND_STR_(x) #x
#define ND_STR(x) ND_STR_(x)

/* [0] connections matched and set, [1] bpf_setsockopt failures (`bpftool map dump`) */
BPF_ARRAY(cc_stats, u64, 2);

static __always_inline int cc_port_match(__u32 lport, __u32 rport)
{
	if (CC_ALL_PORTS)
		return 1;
	return (CC_PORT != 0 && (lport == CC_PORT || rport == CC_PORT)) ||
	       (CC_PORT2 != 0 && (lport == CC_PORT2 || rport == CC_PORT2));
}

int cc_sockops(struct bpf_sock_ops *skops)
{
	char cc[16] = ND_STR(CC_NAME);
	__u32 op = skops->op;
	int idx, rv;

	/* active side: before the SYN is sent; passive side: when the accepted socket is
	 * established (before its cc is initialised). Both always fire, no cb flags needed. */
	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB &&
	    op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	if (skops->family != AF_INET && skops->family != AF_INET6)
		return 1;
	/* local_port is host order; remote_port is the be16 in network order (ntohl gives it) */
	if (!cc_port_match(skops->local_port, bpf_ntohl(skops->remote_port)))
		return 1;
	rv = bpf_setsockopt(skops, ND_SOL_TCP, ND_TCP_CONGESTION, cc, sizeof(cc));
	idx = rv == 0 ? 0 : 1;
	u64 *v = cc_stats.lookup(&idx);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 1;
}
