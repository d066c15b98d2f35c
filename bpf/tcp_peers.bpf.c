/* tcp_peers: per-socket TCP state aggregated in the kernel, keyed by socket cookie.
 *
 * Hooks (tracepoint args only — stable across kernels, see probes/tcp_peers.toml):
 *   tcp:tcp_probe            srtt, cwnd, ssthresh, windows, snd_una, sock_cookie, skaddr
 *     or, with -DHOOK_BTF (netdiag/trace/btfhook.py), tp_btf/tcp_probe: a BTF-enabled raw
 *     tracepoint with (struct sock *sk, struct sk_buff *skb). No perf trace record is built;
 *     the same values are read from struct tcp_sock at byte offsets taken from the running
 *     kernel's BTF (/sys/kernel/btf/vmlinux, passed as -DOFF_*): the one place this program
 *     reads kernel-internal layout, and only with offsets of the kernel it runs on.
 *   tcp:tcp_retransmit_skb   skaddr only (no sock_cookie) -> joined through `life`
 *   sock:inet_sock_set_state skaddr only (no sock_cookie) -> joined through `life`
 * `life` maps a socket's kernel address to its cookie (learnt from tcp_probe, which carries
 * both); an entry is removed when the socket reaches TCP_CLOSE, so a reused address never
 * inherits an old cookie. No per-packet output to user space.
 *
 * Rows live in `slots`, an array direct-mapped by cookie (slot = cookie & (SLOTS - 1)): on an
 * ACK of a socket that owns its slot the row is found by an inlined array lookup — no hash,
 * no helper call (the hash lookup was ~2/3 of the program's own cost). A new socket takes its
 * slot when the slot is free: never used (claimed by a compare-and-swap of the cookie), or its
 * owner closed more than SLOT_REUSE_NS ago, by which time user space has reported the closed
 * row, or sent no event for IDLE_NS (claimed by a compare-and-swap of closed_ns / last_ns, the
 * row written, the cookie stored last);
 * otherwise (a collision, or more sockets than slots) its row goes to the `peers` hash as
 * before. User space reads both (probes/tcp_peers.toml [output] slots_map) and deletes only
 * hash rows; a closed slot row is reported once and left for reuse.
 *
 * Every socket is counted from the moment the probe sees it: pid / cgroup / netns filters are
 * applied in user space at read time (a kernel allowlist filled from sock_diag each interval
 * lost every new connection's first interval). For the attribution of connections that open
 * and close between two reads, the task and cgroup doing connect() are recorded at SYN_SENT
 * (process context there, unlike tcp_probe, which runs in softirq).
 *
 * -DSAMPLE_NS=N (trace-peers --sample-ms): per-socket rate limit of the tcp_probe detail. An
 * ACK within N ns of the socket's last sample on this CPU touches only a per-CPU array slot
 * (an inlined lookup: no hash, no atomics, no shared cache line): it counts the event and
 * keeps the slot's min/max srtt. Once per N ns per socket and CPU the full update runs
 * (last srtt, histogram, sum, cwnd, windows, bytes acked) and the slot's count and min/max
 * are folded into the row. So events and min/max stay whole (late by at most N ns),
 * the histogram and mean are of sampled srtt (`samples`), bytes acked are counted to the
 * last sample. SAMPLE_NS 0 (default): every ACK updates the row, as before.
 */
#include "netdiag.h"

#ifndef MAX_PEERS
#define MAX_PEERS 8192
#endif
#ifndef SLOTS
#define SLOTS 2048		/* direct-mapped rows (a power of two); the rest go to `peers` */
#endif
#ifndef SLOT_REUSE_NS
#define SLOT_REUSE_NS 60000000000ULL	/* a closed owner's slot is reused after 60 s */
#endif
#ifndef IDLE_NS
/* an open owner's slot is reused after this long without any event: a socket whose close was
 * missed (its `life` entry evicted under churn) would otherwise hold its slot for ever. An open
 * socket idle this long loses its slot; its next ACK starts a fresh row in `peers`. */
#define IDLE_MIN_NS 600000000000ULL	/* 10 min */
#define IDLE_NS (SLOT_REUSE_NS * 10 > IDLE_MIN_NS ? SLOT_REUSE_NS * 10 : IDLE_MIN_NS)
/* 10 min, or 10 x SLOT_REUSE_NS when a long read interval raised it */
#endif
#ifndef SAMPLE_NS
#define SAMPLE_NS 0
#endif
#define PEND_SLOTS 1024		/* per-CPU slots of the sampled fast path (direct-mapped by cookie) */
#define HIST_SLOTS 27		/* bpf_log2l(srtt_us) = floor(log2)+1: slot k holds [2^(k-1), 2^k) us, to ~33 s */

#define TCP_ESTABLISHED_ 1
#define TCP_CLOSE_ 7
#define IPPROTO_TCP_ 6

struct peer {
	/* written on every ACK: first, in as few cache lines as possible */
	u64 cookie;
	u64 last_ns;		/* last event of any kind */
	u64 events;		/* tcp_probe events */
	u64 samples;		/* tcp_probe events that updated srtt sum/hist/last (= events unless SAMPLE_NS) */
	u64 srtt_sum_us;
	u64 bytes_acked;	/* sum of snd_una advances */
	u32 srtt_min_us;
	u32 srtt_max_us;
	u32 srtt_last_us;
	u32 snd_cwnd;
	u32 ssthresh;
	u32 snd_wnd;
	u32 rcv_wnd;
	u32 snd_una;
	u32 hist[HIST_SLOTS];
	u32 state;
	/* written once or rarely */
	u64 first_ns;		/* first tcp_probe seen */
	u64 open_ns;		/* entered SYN_SENT/SYN_RECV (0: opened before attach) */
	u64 closed_ns;		/* reached TCP_CLOSE (0: still open) */
	u64 retrans;		/* tcp_retransmit_skb events */
	u64 open_cgroup;	/* cgroup v2 id of the task that called connect() (0: unknown) */
	u32 open_pid;		/* tgid of the task that called connect() (0: unknown/passive) */
	u16 family;
	u16 sport;
	u16 dport;
	u16 pad;
	u8 saddr[16];
	u8 daddr[16];
};

struct life {
	u64 cookie;		/* 0 until the first tcp_probe */
	u64 open_ns;
	u64 retrans;		/* retransmits before the first tcp_probe (SYN, first data) */
	u64 open_cgroup;
	u32 open_pid;
	u32 state;
};

/* stats slots; names in probes/tcp_peers.toml [output].stats */
#define S_PROBE 0
#define S_RETRANS 1
#define S_STATE 2
#define S_LOST 3		/* peers map full: event not aggregated */
#define S_RETRANS_UNJOINED 4	/* retransmit on a socket with no cookie yet (e.g. SYN) */
#define S_FILTERED 5
#define S_SLOTS 6

/* a socket's ACKs since its last sample on this CPU (SAMPLE_NS only) */
struct pend {
	u64 cookie;
	u64 sample_ns;		/* last full update of this socket on this CPU */
	u64 events;		/* events not yet folded into the row */
	u32 srtt_min_us;
	u32 srtt_max_us;
};

BPF_ARRAY(slots, struct peer, SLOTS);
BPF_HASH(peers, u64, struct peer, MAX_PEERS);
BPF_TABLE("lru_hash", u64, struct life, life, MAX_PEERS * 2);
BPF_PERCPU_ARRAY(stats, u64, S_SLOTS);

/* The per-ACK time (a row's last_ns) without a clock read per ACK: bpf_ktime_get_ns() reads
 * the TSC, which in this project's VMs cost about as much as the rest of the program body
 * (docs/benchmarks.md, probes). Per CPU, the time of its first event in the current jiffy
 * (bpf_jiffies64: a load the JIT inlines) is kept and reused until the jiffy changes, so
 * last_ns is that of the CPU's first event in the same kernel tick (about a tick early: 1/HZ,
 * more when jiffies lag, e.g. a VM's steal time).
 * Exact where a time decides something finer: a new row (first_ns), the sampled path
 * (SAMPLE_NS), the lifecycle and retransmit events. -DEXACT_NS: a clock read per ACK again. */
#if SAMPLE_NS > 0 || defined(EXACT_NS)
#define TICK_NOW() bpf_ktime_get_ns()
#else
struct tick_clock {
	u64 jiffies;
	u64 ns;
};
BPF_PERCPU_ARRAY(tick_clock, struct tick_clock, 1);

static __always_inline u64 tick_now(void)
{
	u32 z = 0;
	struct tick_clock *c = tick_clock.lookup(&z);
	if (!c)
		return bpf_ktime_get_ns();
	u64 j = bpf_jiffies64();
	if (c->jiffies != j) {
		c->jiffies = j;
		c->ns = bpf_ktime_get_ns();
	}
	return c->ns;
}
#define TICK_NOW() tick_now()
#endif
#if SAMPLE_NS > 0
BPF_PERCPU_ARRAY(pend, struct pend, PEND_SLOTS);

static __always_inline void pend_fold(struct peer *p, struct pend *c)
{
	p->events += c->events;
	if (c->srtt_min_us < p->srtt_min_us)
		p->srtt_min_us = c->srtt_min_us;
	if (c->srtt_max_us > p->srtt_max_us)
		p->srtt_max_us = c->srtt_max_us;
}
#endif

/* the row of a socket: its slot if it owns it, else the overflow hash */
static __always_inline struct peer *row_of(u64 cookie)
{
	u32 i = (u32)cookie & (SLOTS - 1);
	struct peer *p = slots.lookup(&i);
	if (p && p->cookie == cookie)
		return p;
	return peers.lookup(&cookie);
}

static __always_inline void stat_inc(int slot)
{
	u64 *v = stats.lookup(&slot);
	if (v)
		(*v)++;		/* per-CPU slot: no atomics needed */
}

/* What one tcp_probe hit gives, from either hook. The addresses are pointers, read only for
 * a socket's first row: s4/d4 the IPv4 address, s6/d6 the IPv6 one. */
struct probe_ev {
	u64 cookie;
	u64 sk;
	u32 srtt;		/* us (tp->srtt_us >> 3) */
	u32 snd_cwnd;
	u32 ssthresh;		/* tcp_current_ssthresh() */
	u32 snd_wnd;
	u32 rcv_wnd;
	u32 snd_una;
	u16 family;
	u16 sport;
	u16 dport;
	const void *s4, *s6, *d4, *d6;
};

static __always_inline int on_probe(struct probe_ev *e);

#ifdef HOOK_BTF
/* A load of SZ at a constant offset from a BTF-typed pointer, in asm: bcc's rewriter would turn
 * a C dereference of a ctx-derived pointer into bpf_probe_read; the verifier checks this one
 * against the kernel's BTF (offset and size inside a member of the pointed-to struct). */
#define ND_STR_(x) #x
#define ND_STR(x) ND_STR_(x)
#define ND_LD(sz, p, off) ({ u64 __v; asm("%0 = *(" #sz " *)(%1 + " ND_STR(off) ")" : "=r"(__v) : "r"(p)); __v; })
/* bcc 0.26 declares bpf_get_socket_cookie as returning u32: the cookie would be cut */
static u64 (*nd_socket_cookie)(void *sk) = (void *)BPF_FUNC_get_socket_cookie;

RAW_TRACEPOINT_PROBE(tcp_probe)
{
	void *sk = (void *)ctx->args[0];
	/* a tcp_sock-typed pointer to the same socket: its fields are past struct sock */
	void *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	struct probe_ev e;
	/* tcp_probe's sock_cookie is sock_gen_cookie(sk): the cookie, made on first use */
	e.cookie = ND_LD(u64, sk, OFF_COOKIE);
	if (e.cookie == 0)
		e.cookie = nd_socket_cookie(sk);
	e.sk = (u64)sk;
	e.sport = __builtin_bswap16((u16)ND_LD(u16, tp, OFF_SPORT));
	e.dport = __builtin_bswap16((u16)ND_LD(u16, sk, OFF_DPORT));
	e.family = ND_LD(u16, sk, OFF_FAMILY);
	e.srtt = (u32)ND_LD(u32, tp, OFF_SRTT_US) >> 3;
	u32 cwnd = ND_LD(u32, tp, OFF_SND_CWND);
	u32 ss = ND_LD(u32, tp, OFF_SND_SSTHRESH);
	/* tcp_current_ssthresh(): outside CWR / Recovery, at least 3/4 of cwnd */
	u32 ca = ((u32)ND_LD(u8, tp, OFF_CA_STATE) >> CA_STATE_SHIFT) & ((1 << CA_STATE_BITS) - 1);
	if (!((1 << ca) & ((1 << 2) | (1 << 3)))) {	/* TCP_CA_CWR, TCP_CA_Recovery */
		u32 q = (cwnd >> 1) + (cwnd >> 2);
		if (q > ss)
			ss = q;
	}
	e.snd_cwnd = cwnd;
	e.ssthresh = ss;
	e.snd_wnd = ND_LD(u32, tp, OFF_SND_WND);
	e.rcv_wnd = ND_LD(u32, tp, OFF_RCV_WND);
	e.snd_una = ND_LD(u32, tp, OFF_SND_UNA);
	/* TP_STORE_ADDRS: inet_saddr / inet_daddr for AF_INET, sk_v6_* otherwise */
	e.s4 = tp + OFF_SADDR;
	e.d4 = sk + OFF_DADDR;
	e.s6 = sk + OFF_V6_SADDR;
	e.d6 = sk + OFF_V6_DADDR;
	return on_probe(&e);
}
#else
TRACEPOINT_PROBE(tcp, tcp_probe)
{
	/* tcp_probe's saddr/daddr are struct sockaddr_in / sockaddr_in6 bytes */
	struct probe_ev e = {
		.cookie = args->sock_cookie,
		.sk = (u64)args->skaddr,
		.srtt = args->srtt,
		.snd_cwnd = args->snd_cwnd,
		.ssthresh = args->ssthresh,
		.snd_wnd = args->snd_wnd,
		.rcv_wnd = args->rcv_wnd,
		.snd_una = args->snd_una,
		.family = args->family,
		.sport = args->sport,
		.dport = args->dport,
		.s4 = args->saddr + 4,
		.s6 = args->saddr + 8,
		.d4 = args->daddr + 4,
		.d6 = args->daddr + 8,
	};
	return on_probe(&e);
}
#endif

static __always_inline int on_probe(struct probe_ev *e)
{
	u64 cookie = e->cookie;
	u64 sk = e->sk;
	u64 now = TICK_NOW();

	if (!netdiag_port_match(e->sport, e->dport)) {
		stat_inc(S_FILTERED);
		return 0;
	}
	stat_inc(S_PROBE);
#ifdef COST_FLOOR
	return 0;	/* scripts/probe_cost_ab.py: the cost of running any program here */
#endif
	u32 srtt = e->srtt;
#if SAMPLE_NS > 0
	/* sampled: between two samples of a socket only its per-CPU slot is touched */
	u32 idx = (u32)(cookie ^ (cookie >> 10)) & (PEND_SLOTS - 1);
	struct pend *c = pend.lookup(&idx);
	if (!c)
		return 0;
	if (c->cookie == cookie && now - c->sample_ns < SAMPLE_NS) {
		c->events++;
		if (srtt > 0 && srtt < c->srtt_min_us)
			c->srtt_min_us = srtt;
		if (srtt > c->srtt_max_us)
			c->srtt_max_us = srtt;
		return 0;
	}
	if (c->cookie != cookie && c->events > 0) {
		/* another socket held the slot: fold its pending events into its own row */
		struct peer *op = row_of(c->cookie);
		if (op)
			pend_fold(op, c);
		c->events = 0;	/* folded once, whatever happens below */
		c->srtt_min_us = 0xffffffff;
		c->srtt_max_us = 0;
	}
#endif

	/* an owned slot: one inlined array lookup per ACK (per sample with SAMPLE_NS) */
	u32 si = (u32)cookie & (SLOTS - 1);
	struct peer *slot = slots.lookup(&si);
	if (!slot)
		return 0;
	struct peer *p = slot;
	if (slot->cookie != cookie)
		p = peers.lookup(&cookie);	/* not its slot: an overflow row, or none yet */
	if (!p) {
		now = bpf_ktime_get_ns();	/* a new row: exact first_ns */
		/* a new socket: `life` for what was learnt before its first ACK */
		struct life *l = life.lookup(&sk);
		if (!l) {
			struct life nl = {.cookie = cookie, .state = TCP_ESTABLISHED_};
			life.update(&sk, &nl);
		} else {
			l->cookie = cookie;
		}
		struct peer np = {};
		np.cookie = cookie;
		np.first_ns = now;
		np.srtt_min_us = 0xffffffff;
		np.family = e->family;
		np.sport = e->sport;
		np.dport = e->dport;
		np.state = TCP_ESTABLISHED_;
		np.snd_una = e->snd_una;
		if (l) {
			np.open_ns = l->open_ns;
			np.state = l->state;
			np.retrans = l->retrans;	/* carried over: nstat counts them too */
			np.open_pid = l->open_pid;
			np.open_cgroup = l->open_cgroup;
		}
		netdiag_addr_read(np.saddr, e->family, e->s4, e->s6);
		netdiag_addr_read(np.daddr, e->family, e->d4, e->d6);
		np.last_ns = now;	/* before the cookie is visible: a row is never seen idle at 0 */
		u64 owner = slot->cookie;
		int won = 0;
		if (owner == 0) {
			/* never used: the cookie CAS claims it (closed_ns stays 0 meanwhile) */
			won = __sync_val_compare_and_swap(&slot->cookie, 0, cookie) == 0;
			if (won)
				*slot = np;	/* ours: no other socket writes it now */
		} else {
			/* reuse: claim by a CAS on closed_ns (closed owner) or last_ns (idle owner)
			 * from the value read, so exactly one socket wins; the row is written, the
			 * cookie stored last. A CAS on the cookie alone let two sockets in: until the
			 * row was written the slot still showed the old owner's closed_ns. */
			u64 cl = slot->closed_ns;
			u64 seen = slot->last_ns;
			/* `now` was read before these: a time another CPU wrote since can be later
			 * (now - t would wrap to a huge age), hence t < now */
			if (cl != 0 && cl < now && now - cl > SLOT_REUSE_NS)
				won = __sync_val_compare_and_swap(&slot->closed_ns, cl, 0) == cl;
			else if (cl == 0 && seen != 0 && seen < now && now - seen > IDLE_NS)
				won = __sync_val_compare_and_swap(&slot->last_ns, seen, now) == seen;
			if (won) {
				np.cookie = owner;	/* the old cookie until the row is whole */
				*slot = np;
				/* the cookie last, by an atomic (a full barrier); only the winner
				 * writes it now */
				__sync_val_compare_and_swap(&slot->cookie, owner, cookie);
			}
		}
		if (won) {
			p = slot;
		} else {
			if (peers.insert(&cookie, &np) != 0) {
				stat_inc(S_LOST);
				return 0;
			}
			p = peers.lookup(&cookie);
			if (!p)
				return 0;
		}
	}

#if SAMPLE_NS > 0
	if (c->cookie == cookie)
		pend_fold(p, c);
	c->cookie = cookie;
	c->sample_ns = now;
	c->events = 0;
	c->srtt_min_us = 0xffffffff;
	c->srtt_max_us = 0;
#endif
	if (now > p->last_ns)	/* a tick-coarse now may precede an exact time already there */
		p->last_ns = now;
	p->events++;
	p->samples++;
	p->srtt_last_us = srtt;
	if (srtt > 0) {
		if (srtt < p->srtt_min_us)
			p->srtt_min_us = srtt;
		if (srtt > p->srtt_max_us)
			p->srtt_max_us = srtt;
		p->srtt_sum_us += srtt;
		u32 slot = bpf_log2l(srtt);
		if (slot >= HIST_SLOTS)
			slot = HIST_SLOTS - 1;
		/* not atomic: tcp_probe runs under the socket lock, so this program is the only
		 * writer of hist/sum/last of its socket's row; with SAMPLE_NS, pend_fold on another
		 * socket's row also adds to events and min/max there (a race can lose that fold's
		 * events: counts, never the histogram) */
		p->hist[slot]++;
	}
	p->snd_cwnd = e->snd_cwnd;
	p->ssthresh = e->ssthresh;
	p->snd_wnd = e->snd_wnd;
	p->rcv_wnd = e->rcv_wnd;
	u32 una = e->snd_una;
	u32 adv = una - p->snd_una;	/* modulo 2^32: sequence wrap is fine */
	if (adv < 0x80000000)
		p->bytes_acked += adv;
	p->snd_una = una;
	return 0;
}

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
	u64 sk = (u64)args->skaddr;

	if (!netdiag_port_match(args->sport, args->dport))
		return 0;
#ifdef HAVE_ARG_TCP_RETRANSMIT_SKB_ERR
	if (args->err != 0)	/* not sent: nstat does not count it either */
		return 0;
#endif
	stat_inc(S_RETRANS);
	struct life *l = life.lookup(&sk);
	if (!l) {
		/* a socket older than the probe that has not received a segment since */
		struct life nl = {.state = TCP_ESTABLISHED_, .retrans = 1};
		life.update(&sk, &nl);
		stat_inc(S_RETRANS_UNJOINED);
		return 0;
	}
	if (l->cookie == 0) {
		__sync_fetch_and_add(&l->retrans, 1);	/* handed to the row at the first tcp_probe */
		stat_inc(S_RETRANS_UNJOINED);
		return 0;
	}
	struct peer *p = row_of(l->cookie);
	if (!p) {
		stat_inc(S_RETRANS_UNJOINED);
		return 0;
	}
	__sync_fetch_and_add(&p->retrans, 1);
	p->last_ns = bpf_ktime_get_ns();
	return 0;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
	if (args->protocol != IPPROTO_TCP_)
		return 0;
	if (!netdiag_port_match(args->sport, args->dport))
		return 0;
	stat_inc(S_STATE);

	u64 sk = (u64)args->skaddr;
	u64 now = bpf_ktime_get_ns();
	int ns = args->newstate;
	struct life *l = life.lookup(&sk);

	if (!l) {
		if (ns == TCP_CLOSE_)
			return 0;
		struct life nl = {.state = ns};
		/* seen being born: SYN_SENT (active open) or SYN_RECV (passive open) */
		int os = args->oldstate;
		if (ns == 2 || ns == 3 || os == 2 || os == 3 || os == TCP_CLOSE_ || os == 10 || os == 12)
			nl.open_ns = now;
		if (ns == 2) {	/* CLOSE -> SYN_SENT runs in connect(): the caller is the owner */
			nl.open_pid = bpf_get_current_pid_tgid() >> 32;
			nl.open_cgroup = bpf_get_current_cgroup_id();
		}
		life.update(&sk, &nl);
		return 0;
	}
	l->state = ns;
	if (l->cookie != 0) {
		struct peer *p = row_of(l->cookie);
		if (p) {
			p->state = ns;
			p->last_ns = now;
			if (ns == TCP_CLOSE_)
				p->closed_ns = now;
		}
	}
	if (ns == TCP_CLOSE_)
		life.delete(&sk);
	return 0;
}
