/* selftest_sockops: a sockops program that only counts callbacks. doctor loads it and attaches
 * it to a scratch cgroup to prove `tune --cc … --port/--cgroup` can work on this host. */
#include <uapi/linux/bpf.h>

BPF_ARRAY(calls, u64, 1);

int selftest_sockops(struct bpf_sock_ops *skops)
{
	int zero = 0;
	u64 *v = calls.lookup(&zero);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 1;
}
