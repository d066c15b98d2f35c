/* tcp_connects: TCP opens, active (connect()) and passive (accepted), per peer address,
 * service port and — for active opens — the command that connected, with handshake latency.
 *
 * Hooks (tracepoint args only):
 *   sock:inet_sock_set_state  CLOSE->SYN_SENT (connect(): process context, so pid/comm are
 *                             the caller's), SYN_SENT->ESTABLISHED (active handshake done:
 *                             latency = time in SYN_SENT, SYN retransmits included),
 *                             SYN_SENT->CLOSE (failed: refused, timed out, aborted),
 *                             LISTEN->SYN_RECV (a passive open's child socket, created when
 *                             the client's final ACK arrives)
 *   tcp:tcp_probe             first segment on a passive child: its srtt is the handshake's
 *                             RTT sample (SYN-ACK sent -> ACK received); one lookup per event
 *                             in a small LRU map of children not yet measured
 *   tcp:tcp_retransmit_synack SYN-ACK retransmits (a lossy or slow client), per listener port
 */
#include "netdiag.h"

#ifndef MAX_KEYS
#define MAX_KEYS 4096
#endif
#define HIST_SLOTS 27
#define TASK_COMM_LEN_ 16
#define IPPROTO_TCP_ 6
#define DIR_ACTIVE 0
#define DIR_PASSIVE 1

struct conn_key {
	u8 raddr[16];
	u16 family;
	u16 port;		/* service port: the peer's for active opens, ours for passive */
	u16 dir;
	u16 pad;
	char comm[TASK_COMM_LEN_];	/* active opens: the task that called connect() */
};

struct conn_val {
	u64 opens;		/* SYN sent (active) / child socket created (passive) */
	u64 established;
	u64 failed;		/* active: SYN_SENT -> CLOSE */
	u64 synack_retrans;	/* passive: SYN-ACK retransmits to this peer */
	u64 lat_samples;
	u64 lat_sum_us;
	u32 lat_min_us;
	u32 lat_max_us;
	u32 last_pid;
	u32 pad;
	u64 last_ns;
	u32 hist[HIST_SLOTS];
};

struct pending {
	struct conn_key key;
	u64 start_ns;
};

#define S_EVENTS 0
#define S_LOST 1
#define S_SLOTS 2

BPF_HASH(connects, struct conn_key, struct conn_val, MAX_KEYS);
BPF_TABLE("lru_hash", u64, struct pending, active, MAX_KEYS);
BPF_TABLE("lru_hash", u64, struct conn_key, passive, MAX_KEYS);
BPF_PERCPU_ARRAY(stats, u64, S_SLOTS);

static __always_inline void stat_inc(int slot)
{
	u64 *v = stats.lookup(&slot);
	if (v)
		(*v)++;
}

static __always_inline struct conn_val *val_of(struct conn_key *k)
{
	struct conn_val zero = {.lat_min_us = 0xffffffff};
	struct conn_val *v = connects.lookup_or_try_init(k, &zero);
	if (!v)
		stat_inc(S_LOST);
	return v;
}

/* The key of an open: the peer's address, the service port, active or passive. */
static __always_inline void key_fill(struct conn_key *k, u16 dir, u16 family, u16 port,
				     const void *raddr_v4, const void *raddr_v6)
{
	k->dir = dir;
	k->family = family;
	k->port = port;
	netdiag_addr_read(k->raddr, family, raddr_v4, raddr_v6);
}

static __always_inline void add_latency(struct conn_val *v, u64 us)
{
	u32 u = us > 0xffffffff ? 0xffffffff : (u32)us;
	__sync_fetch_and_add(&v->lat_samples, 1);
	__sync_fetch_and_add(&v->lat_sum_us, u);
	if (u < v->lat_min_us)
		v->lat_min_us = u;
	if (u > v->lat_max_us)
		v->lat_max_us = u;
	u32 slot = bpf_log2l(u);
	if (slot >= HIST_SLOTS)
		slot = HIST_SLOTS - 1;
	__sync_fetch_and_add(&v->hist[slot], 1);
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
	if (args->protocol != IPPROTO_TCP_)
		return 0;
	if (!netdiag_port_match(args->sport, args->dport))
		return 0;
	int os = args->oldstate;
	int ns = args->newstate;
	u64 sk = (u64)args->skaddr;
	u64 now = bpf_ktime_get_ns();

	if (os == 7 && ns == 2) {	/* CLOSE -> SYN_SENT: connect() */
		stat_inc(S_EVENTS);
		struct pending p = {};
		p.start_ns = now;
		key_fill(&p.key, DIR_ACTIVE, args->family, args->dport, args->daddr, args->daddr_v6);
		bpf_get_current_comm(p.key.comm, sizeof(p.key.comm));
		struct conn_val *v = val_of(&p.key);
		if (v) {
			__sync_fetch_and_add(&v->opens, 1);
			v->last_pid = bpf_get_current_pid_tgid() >> 32;
			v->last_ns = now;
		}
		active.update(&sk, &p);
		return 0;
	}
	if (os == 2) {			/* SYN_SENT -> ESTABLISHED or CLOSE */
		struct pending *p = active.lookup(&sk);
		if (!p)
			return 0;	/* connect() before the probe attached */
		stat_inc(S_EVENTS);
		struct conn_key k = p->key;
		u64 start = p->start_ns;
		active.delete(&sk);
		struct conn_val *v = val_of(&k);
		if (!v)
			return 0;
		v->last_ns = now;
		if (ns == 1) {
			__sync_fetch_and_add(&v->established, 1);
			add_latency(v, (now - start) / 1000);
		} else {
			__sync_fetch_and_add(&v->failed, 1);
		}
		return 0;
	}
	if (os == 10 && ns == 3) {	/* LISTEN -> SYN_RECV: a passive open's child */
		stat_inc(S_EVENTS);
		struct conn_key k = {};
		key_fill(&k, DIR_PASSIVE, args->family, args->sport, args->daddr, args->daddr_v6);
		struct conn_val *v = val_of(&k);
		if (v) {
			__sync_fetch_and_add(&v->opens, 1);
			v->last_ns = now;
		}
		passive.update(&sk, &k);
		return 0;
	}
	if (os == 3 && ns == 1) {	/* SYN_RECV -> ESTABLISHED */
		struct conn_key *k = passive.lookup(&sk);
		if (!k)
			return 0;
		struct conn_key kk = *k;
		struct conn_val *v = val_of(&kk);
		if (v)
			__sync_fetch_and_add(&v->established, 1);
		return 0;
	}
	if (ns == 7)
		passive.delete(&sk);	/* closed before its first segment: no sample */
	return 0;
}

TRACEPOINT_PROBE(tcp, tcp_probe)
{
	u64 sk = (u64)args->skaddr;
	struct conn_key *k = passive.lookup(&sk);
	if (!k)
		return 0;
	struct conn_key kk = *k;
	passive.delete(&sk);
	struct conn_val *v = val_of(&kk);
	if (v && args->srtt > 0)
		add_latency(v, args->srtt);	/* us: the handshake's RTT sample */
	return 0;
}

TRACEPOINT_PROBE(tcp, tcp_retransmit_synack)
{
	if (!netdiag_port_match(args->sport, args->dport))
		return 0;
	stat_inc(S_EVENTS);
	struct conn_key k = {};
	key_fill(&k, DIR_PASSIVE, args->family, args->sport, args->daddr, args->daddr_v6);
	struct conn_val *v = val_of(&k);
	if (v)
		__sync_fetch_and_add(&v->synack_retrans, 1);
	return 0;
}
