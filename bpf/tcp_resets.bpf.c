/* tcp_resets: TCP resets sent and received, counted per peer address, service port, our
 * socket's state and — for sent resets — the kernel's reason. The service port is the end
 * that is not an ephemeral port (net.ipv4.ip_local_port_range, passed as -D by user space),
 * so keys stay bounded by peers x services however many connections are reset.
 *
 * Hooks (tracepoint args only):
 *   tcp:tcp_send_reset     saddr/daddr as struct sockaddr_in/_in6 bytes (uapi layout: family
 *                          at 0, port at 2, address at 4 or 8), state, reason (6.10+). With no
 *                          full socket (a reset to a closed port) the kernel fills the
 *                          addresses from the packet, reversed, so saddr is still ours.
 *   tcp:tcp_receive_reset  sport/dport/family/addresses; the socket state is not carried.
 * One hash update per reset; resets are rare, so per-peer keys stay few.
 */
#include "netdiag.h"

#ifndef MAX_KEYS
#define MAX_KEYS 4096
#endif

/* bcc declares `reason` as `enum sk_rst_reason`, which no uapi header defines; a complete
 * enum of the same (4-byte) size is all the compiler needs. Names come from tracefs. */
enum sk_rst_reason { NETDIAG_RST_REASON_ANY = 0x7fffffff };

#ifndef EPHEMERAL_LO
#define EPHEMERAL_LO 32768
#endif
#ifndef EPHEMERAL_HI
#define EPHEMERAL_HI 60999
#endif
#define EPHEMERAL(p) ((p) >= EPHEMERAL_LO && (p) <= EPHEMERAL_HI)

#define DIR_SENT 0
#define DIR_RECEIVED 1
#define REASON_NONE 0xffff	/* received resets carry no reason */

struct rst_key {
	u8 laddr[16];
	u8 raddr[16];
	u16 family;
	u16 port;		/* service port */
	u16 side;		/* 0: the service port is ours, 1: the peer's */
	u16 dir;
	u16 state;		/* our socket's TCP state when sending (0: no socket) */
	u16 reason;
};

struct rst_val {
	u64 count;
	u64 first_ns;
	u64 last_ns;
};

#define S_EVENTS 0
#define S_LOST 1
#define S_SLOTS 2

BPF_HASH(resets, struct rst_key, struct rst_val, MAX_KEYS);
BPF_PERCPU_ARRAY(stats, u64, S_SLOTS);

static __always_inline void stat_inc(int slot)
{
	u64 *v = stats.lookup(&slot);
	if (v)
		(*v)++;
}

static __always_inline void count(struct rst_key *k, u16 lport, u16 rport)
{
	if (EPHEMERAL(lport) && !EPHEMERAL(rport)) {
		k->port = rport;
		k->side = 1;
	} else {
		k->port = lport;
	}
	u64 now = bpf_ktime_get_ns();
	struct rst_val zero = {.first_ns = now};
	struct rst_val *v = resets.lookup_or_try_init(k, &zero);
	if (!v) {
		stat_inc(S_LOST);
		return;
	}
	__sync_fetch_and_add(&v->count, 1);
	v->last_ns = now;
}

/* struct sockaddr_in / sockaddr_in6 (uapi): family u16 at 0, port (network order) at 2,
 * IPv4 address at 4, IPv6 address at 8 */
static __always_inline u16 sockaddr_take(const u8 *sa, u8 *addr, u16 *port)
{
	u16 family = 0;
	u16 nport = 0;
	bpf_probe_read_kernel(&family, 2, sa);
	bpf_probe_read_kernel(&nport, 2, sa + 2);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	nport = __builtin_bswap16(nport);
#endif
	*port = nport;
	if (family == AF_INET)
		bpf_probe_read_kernel(addr, 4, sa + 4);
	else if (family == AF_INET6)
		bpf_probe_read_kernel(addr, 16, sa + 8);
	return family;
}

TRACEPOINT_PROBE(tcp, tcp_send_reset)
{
	struct rst_key k = {};
	u16 lport = 0, rport = 0;
	k.dir = DIR_SENT;
	k.family = sockaddr_take((const u8 *)args->saddr, k.laddr, &lport);
	sockaddr_take((const u8 *)args->daddr, k.raddr, &rport);
	if (!netdiag_port_match(lport, rport))
		return 0;
	stat_inc(S_EVENTS);
	k.state = args->state;
#ifdef HAVE_ARG_TCP_SEND_RESET_REASON
	k.reason = args->reason;
#else
	k.reason = REASON_NONE;
#endif
	count(&k, lport, rport);
	return 0;
}

TRACEPOINT_PROBE(tcp, tcp_receive_reset)
{
	struct rst_key k = {};
	if (!netdiag_port_match(args->sport, args->dport))
		return 0;
	stat_inc(S_EVENTS);
	k.dir = DIR_RECEIVED;
	k.family = args->family;
	k.reason = REASON_NONE;
	netdiag_addr_read(k.laddr, args->family, args->saddr, args->saddr_v6);
	netdiag_addr_read(k.raddr, args->family, args->daddr, args->daddr_v6);
	count(&k, args->sport, args->dport);
	return 0;
}
