/* tcp_cong: time each TCP socket spends in each congestion-avoidance state
 * (Open, Disorder, CWR, Recovery, Loss — enum tcp_ca_state, uapi linux/tcp.h).
 *
 * tcp:tcp_cong_state_set carries no sock_cookie, so rows are keyed by the socket's kernel
 * address (skaddr) and carry the 4-tuple; user space joins them to cookies through sock_diag.
 * sock:inet_sock_set_state marks a row closed so a reused address starts a fresh row.
 */
#include "netdiag.h"

#ifndef MAX_SOCKS
#define MAX_SOCKS 8192
#endif
#define CA_STATES 5
#define TCP_CLOSE_ 7
#define IPPROTO_TCP_ 6

struct cong {
	u64 skaddr;
	u64 first_ns;
	u64 since_ns;		/* entered `ca_state` at this time */
	u64 closed_ns;
	u64 time_ns[CA_STATES];	/* completed time in each state (the running one is added by user space) */
	u32 enters[CA_STATES];	/* transitions into each state */
	u32 ca_state;
	u16 family;
	u16 sport;
	u16 dport;
	u16 pad;
	u8 saddr[16];
	u8 daddr[16];
};

#define S_EVENTS 0
#define S_LOST 1
#define S_FILTERED 2
#define S_SLOTS 3

BPF_HASH(socks, u64, struct cong, MAX_SOCKS);
BPF_PERCPU_ARRAY(stats, u64, S_SLOTS);

static __always_inline void stat_inc(int slot)
{
	u64 *v = stats.lookup(&slot);
	if (v)
		(*v)++;
}

TRACEPOINT_PROBE(tcp, tcp_cong_state_set)
{
	if (!netdiag_port_match(args->sport, args->dport)) {
		stat_inc(S_FILTERED);
		return 0;
	}
	stat_inc(S_EVENTS);
	u64 sk = (u64)args->skaddr;
	u64 now = bpf_ktime_get_ns();
	u32 ns = args->cong_state;
	if (ns >= CA_STATES)
		return 0;
	struct cong *c = socks.lookup(&sk);
	if (!c) {
		struct cong n = {};
		n.skaddr = sk;
		n.first_ns = now;
		n.since_ns = now;
		n.ca_state = ns;
		n.enters[ns] = 1;
		n.family = args->family;
		n.sport = args->sport;
		n.dport = args->dport;
		if (args->family == AF_INET) {
			__builtin_memcpy(n.saddr, args->saddr, 4);
			__builtin_memcpy(n.daddr, args->daddr, 4);
		} else {
			__builtin_memcpy(n.saddr, args->saddr_v6, 16);
			__builtin_memcpy(n.daddr, args->daddr_v6, 16);
		}
		if (socks.insert(&sk, &n) != 0)
			stat_inc(S_LOST);
		return 0;
	}
	u32 old = c->ca_state;
	if (old < CA_STATES)
		__sync_fetch_and_add(&c->time_ns[old], now - c->since_ns);
	c->since_ns = now;
	c->ca_state = ns;
	__sync_fetch_and_add(&c->enters[ns], 1);
	return 0;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
	if (args->protocol != IPPROTO_TCP_ || args->newstate != TCP_CLOSE_)
		return 0;
	u64 sk = (u64)args->skaddr;
	struct cong *c = socks.lookup(&sk);
	if (c && c->closed_ns == 0) {
		u64 now = bpf_ktime_get_ns();
		u32 old = c->ca_state;
		if (old < CA_STATES)
			__sync_fetch_and_add(&c->time_ns[old], now - c->since_ns);
		c->since_ns = now;
		c->closed_ns = now;
	}
	return 0;
}
