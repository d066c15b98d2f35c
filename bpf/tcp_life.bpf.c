/* tcp_life: one row per TCP connection's life — who (pid/comm where knowable), addresses,
 * duration, bytes sent (acked) and received, and the state it closed from. Like bcc's
 * tcplife, but on tracepoints only (no kprobes, no kernel struct reads):
 *
 *   sock:inet_sock_set_state  birth (CLOSE->SYN_SENT: connect(); LISTEN->SYN_RECV: accepted
 *                             child), pid/comm at transitions that run in the owner's system
 *                             call (SYN_SENT in connect(), FIN_WAIT1/LAST_ACK in close() or
 *                             shutdown()), death (->CLOSE: the old state is the close state)
 *   sock:sock_send_length     bytes the application sent / received through the socket
 *   sock:sock_recv_length     (sendmsg/recvmsg return values; process context, so they also
 *                             name the owner of an accepted socket)
 *
 * Rows are keyed by the socket's kernel address (skaddr, an opaque id here) and a generation,
 * and removed by user space after a closed row was reported once.
 */
#include "netdiag.h"

#ifndef MAX_SOCKS
#define MAX_SOCKS 8192
#endif
#define TASK_COMM_LEN_ 16
#define IPPROTO_TCP_ 6
#define ORIGIN_UNKNOWN 0	/* older than the probe */
#define ORIGIN_ACTIVE 1
#define ORIGIN_PASSIVE 2

struct life {
	u64 open_ns;		/* 0: opened before the probe attached */
	u64 closed_ns;		/* 0: still open */
	u64 bytes_sent;		/* bytes the application's sendmsg()/write() handed over */
	u64 bytes_received;	/* bytes its recvmsg()/read() returned */
	u32 pid;		/* 0: not known yet */
	u32 pad0;
	u16 family;
	u16 lport;
	u16 rport;
	u16 origin;
	u16 state;		/* current state */
	u16 close_state;	/* state it left for CLOSE */
	u16 pad[2];
	u8 laddr[16];
	u8 raddr[16];
	char comm[TASK_COMM_LEN_];
};

#define S_EVENTS 0
#define S_LOST 1
#define S_SLOTS 2

/* a socket's kernel address is reused as soon as it is freed, while its closed row waits
 * for user space: rows are keyed by (address, generation), `current` says which is live */
struct life_key {
	u64 sk;
	u64 gen;
};

BPF_HASH(lives, struct life_key, struct life, MAX_SOCKS);
BPF_TABLE("lru_hash", u64, u64, current, MAX_SOCKS);	/* kept after CLOSE: data can still be read */
BPF_PERCPU_ARRAY(stats, u64, S_SLOTS);

static __always_inline void stat_inc(int slot)
{
	u64 *v = stats.lookup(&slot);
	if (v)
		(*v)++;
}

static __always_inline struct life *life_of(u64 sk, struct life_key *k)
{
	u64 *gen = current.lookup(&sk);
	if (!gen)
		return 0;
	k->sk = sk;
	k->gen = *gen;
	return lives.lookup(k);
}

static __always_inline struct life *life_new(u64 sk, struct life_key *k, struct life *nl, u64 now)
{
	k->sk = sk;
	k->gen = now;
	if (lives.insert(k, nl) != 0) {
		stat_inc(S_LOST);
		return 0;
	}
	current.update(&sk, &now);
	return lives.lookup(k);
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
	if (args->protocol != IPPROTO_TCP_)
		return 0;
	u64 sk = (u64)args->skaddr;
	int os = args->oldstate;
	int ns = args->newstate;
	if (!netdiag_port_match(args->sport, args->dport)) {
		if ((os == 7 && ns == 2) || (os == 10 && ns == 3))
			current.delete(&sk);	/* a new socket here is not one of ours */
		return 0;
	}
	stat_inc(S_EVENTS);
	u64 now = bpf_ktime_get_ns();
	struct life_key k = {};
	struct life *l = life_of(sk, &k);
	if (ns == 10 || (os == 10 && ns == 7)) {	/* listeners are not connections */
		if (l) {
			lives.delete(&k);
			current.delete(&sk);
		}
		return 0;
	}
	int birth = (os == 7 && ns == 2) || (os == 10 && ns == 3);
	if (l && (birth || l->closed_ns))
		l = 0;		/* a new socket at a freed one's address */
	if (!l) {
		if (ns == 7)
			return 0;	/* CLOSE of a socket never seen (e.g. a bound, unused one) */
		struct life nl = {};
		nl.family = args->family;
		nl.lport = args->sport;
		nl.rport = args->dport;
		netdiag_addr_read(nl.laddr, args->family, args->saddr, args->saddr_v6);
		netdiag_addr_read(nl.raddr, args->family, args->daddr, args->daddr_v6);
		if (os == 7 && ns == 2) {
			nl.origin = ORIGIN_ACTIVE;
			nl.open_ns = now;
		} else if (os == 10 && ns == 3) {
			nl.origin = ORIGIN_PASSIVE;
			nl.open_ns = now;
		}
		l = life_new(sk, &k, &nl, now);
		if (!l)
			return 0;
	}
	/* addresses are final only once connected (connect() may bind the source late); a row
	 * made by a byte counter has none until its first state change */
	if (ns == 1 || ns == 2 || l->family == 0) {
		l->family = args->family;
		l->lport = args->sport;
		l->rport = args->dport;
		netdiag_addr_read(l->laddr, args->family, args->saddr, args->saddr_v6);
		netdiag_addr_read(l->raddr, args->family, args->daddr, args->daddr_v6);
	}
	/* these transitions run in the owner's connect() / close() / shutdown() */
	if (l->pid == 0 && (ns == 2 || ns == 4 || ns == 9)) {
		l->pid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(l->comm, sizeof(l->comm));
	}
	l->state = ns;
	if (ns == 7) {
		l->close_state = os;
		l->closed_ns = now;
	}
	return 0;
}

static __always_inline void count_bytes(u64 sk, u16 family, u16 protocol, int ret, int rx)
{
	if (protocol != IPPROTO_TCP_ || (family != AF_INET && family != AF_INET6) || ret <= 0)
		return;
	struct life_key k = {};
	struct life *l = life_of(sk, &k);
	if (!l && current.lookup(&sk))
		return;		/* its closed row was reported already: bytes read after that */
	if (!l) {
		/* a connection older than the probe: counted from now on; its addresses come
		 * with its next state change (this tracepoint carries none, so under a port
		 * filter only rows the state hook made are counted) */
		if (FILTER_PORT != 0)
			return;
		struct life nl = {};
		nl.state = 1;
		l = life_new(sk, &k, &nl, bpf_ktime_get_ns());
		if (!l)
			return;
	}
	if (rx)
		__sync_fetch_and_add(&l->bytes_received, ret);
	else
		__sync_fetch_and_add(&l->bytes_sent, ret);
	if (l->pid == 0) {	/* sendmsg/recvmsg run in the owner's system call */
		l->pid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(l->comm, sizeof(l->comm));
	}
}

TRACEPOINT_PROBE(sock, sock_send_length)
{
	count_bytes((u64)args->sk, args->family, args->protocol, args->ret, 0);
	return 0;
}

TRACEPOINT_PROBE(sock, sock_recv_length)
{
	count_bytes((u64)args->sk, args->family, args->protocol, args->ret, 1);
	return 0;
}
