/* tcp_drops: packets the kernel freed as drops, counted by drop reason, protocol and the code
 * location that dropped them (skb:kfree_skb). Reason names come from the running kernel's
 * tracefs format (__print_symbolic of `reason`), not from a table compiled in here.
 * The tracepoint carries no ports and no sock_cookie; `rx_sk` (receiving socket address, 0 when
 * none) is kept so user space can tell socket-level drops from device/IP-level ones.
 */
#include "netdiag.h"

#ifndef MAX_KEYS
#define MAX_KEYS 4096
#endif
#ifndef SKIP_REASON
#define SKIP_REASON 0		/* e.g. NOT_SPECIFIED; 0 keeps everything */
#endif

/* bcc declares the tracepoint's `reason` as `enum skb_drop_reason`, which no uapi header
 * defines; a complete enum of the same (4-byte) size is all the compiler needs. The values
 * are never used here — names are resolved in user space from tracefs. */
enum skb_drop_reason { NETDIAG_DROP_REASON_ANY = 0x7fffffff };

struct drop_key {
	u64 location;
	u32 reason;
	u16 protocol;		/* skb->protocol, network byte order ethertype */
	u16 has_sk;
};

struct drop_val {
	u64 count;
	u64 last_ns;
};

#define S_EVENTS 0
#define S_LOST 1
#define S_SLOTS 2

BPF_HASH(drops, struct drop_key, struct drop_val, MAX_KEYS);
BPF_PERCPU_ARRAY(stats, u64, S_SLOTS);

static __always_inline void stat_inc(int slot)
{
	u64 *v = stats.lookup(&slot);
	if (v)
		(*v)++;
}

TRACEPOINT_PROBE(skb, kfree_skb)
{
	u32 reason = args->reason;
	if (SKIP_REASON != 0 && reason == SKIP_REASON)
		return 0;
	stat_inc(S_EVENTS);
	struct drop_key k = {};
	k.location = (u64)args->location;
	k.reason = reason;
	k.protocol = args->protocol;
	k.has_sk = args->rx_sk != 0;
	struct drop_val zero = {};
	struct drop_val *v = drops.lookup_or_try_init(&k, &zero);
	if (!v) {
		stat_inc(S_LOST);
		return 0;
	}
	__sync_fetch_and_add(&v->count, 1);
	v->last_ns = bpf_ktime_get_ns();
	return 0;
}
