/* selftest: the smallest real tracepoint program; doctor compiles and attaches it to prove the
 * bcc toolchain, header tree and tracefs work together on this host. Counts tcp_probe events. */
#include "netdiag.h"

BPF_ARRAY(hits, u64, 1);

TRACEPOINT_PROBE(tcp, tcp_probe)
{
	int zero = 0;
	u64 *v = hits.lookup(&zero);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}
