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

#endif
