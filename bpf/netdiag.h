/* Shared definitions for netdiag's kernel halves. Stable ABI only: tracepoint args, uapi
 * structs and BPF helpers — never kernel-internal struct layouts (headers may not match). */
#ifndef NETDIAG_H
#define NETDIAG_H

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/* Filters arrive as -D parameters; 0 means "no filter". */
#ifndef FILTER_PORT
#define FILTER_PORT 0
#endif
#ifndef FILTER_PORT2
#define FILTER_PORT2 0
#endif

static __always_inline int netdiag_port_match(__u16 sport, __u16 dport)
{
	if (FILTER_PORT == 0)
		return 1;
	return sport == FILTER_PORT || dport == FILTER_PORT ||
	       (FILTER_PORT2 != 0 && (sport == FILTER_PORT2 || dport == FILTER_PORT2));
}

/* An address from a tracepoint's args into a 16-byte key field: the 4-byte IPv4 field or the
 * 16-byte IPv6 one by family (an IPv4 address fills the first 4 bytes; the rest stays as the
 * zeroed key had it, so keys compare equal). */
static __always_inline void netdiag_addr_read(__u8 *dst, __u16 family, const void *v4,
					      const void *v6)
{
	if (family == AF_INET)
		bpf_probe_read_kernel(dst, 4, v4);
	else
		bpf_probe_read_kernel(dst, 16, v6);
}

#endif
