/* scripts/probe_cost_ab.py variant (docs/bench-out/probes-tp-btf-cost-ab.txt), not a probe:
   direct BTF loads vs grouped bpf_probe_read_kernel for tcp_peers' per-ACK fields */
#include "netdiag.h"
#define ND_STR_(x) #x
#define ND_STR(x) ND_STR_(x)
#define ND_LD(sz, p, off) ({ u64 __v; asm("%0 = *(" #sz " *)(%1 + " ND_STR(off) ")" : "=r"(__v) : "r"(p)); __v; })
struct vals { u64 cookie; u32 srtt, cwnd, ss, swnd, rwnd, una; u16 sport, dport, fam; u8 ca; };
BPF_PERCPU_ARRAY(out, struct vals, 1);
RAW_TRACEPOINT_PROBE(tcp_probe)
{
	void *sk = (void *)ctx->args[0];
	int z = 0;
	struct vals *v = out.lookup(&z);
	if (!v)
		return 0;
#ifdef PROBE_READ
	u8 a[60], b[52];	/* [snd_wnd .. snd_ssthresh], [snd_una .. rcv_wnd] */
	u8 c[96];		/* sock_common [0..96): dport, family, cookie */
	bpf_probe_read_kernel(a, sizeof(a), sk + OFF_SND_WND);
	bpf_probe_read_kernel(b, sizeof(b), sk + OFF_SND_UNA);
	bpf_probe_read_kernel(c, sizeof(c), sk);
	u16 sp = 0; u8 ca = 0;
	bpf_probe_read_kernel(&sp, 2, sk + OFF_SPORT);
	bpf_probe_read_kernel(&ca, 1, sk + OFF_CA_STATE);
	v->swnd = *(u32 *)&a[0];
	v->cwnd = *(u32 *)&a[OFF_SND_CWND - OFF_SND_WND];
	v->ss = *(u32 *)&a[OFF_SND_SSTHRESH - OFF_SND_WND];
	v->una = *(u32 *)&b[0];
	v->srtt = *(u32 *)&b[OFF_SRTT_US - OFF_SND_UNA] >> 3;
	v->rwnd = *(u32 *)&b[OFF_RCV_WND - OFF_SND_UNA];
	v->cookie = *(u64 *)&c[OFF_COOKIE];
	v->dport = *(u16 *)&c[OFF_DPORT];
	v->fam = *(u16 *)&c[OFF_FAMILY];
	v->sport = sp;
	v->ca = ca;
#else
	void *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	v->cookie = ND_LD(u64, sk, OFF_COOKIE);
	v->dport = ND_LD(u16, sk, OFF_DPORT);
	v->fam = ND_LD(u16, sk, OFF_FAMILY);
	v->sport = ND_LD(u16, tp, OFF_SPORT);
	v->ca = ND_LD(u8, tp, OFF_CA_STATE);
	v->swnd = ND_LD(u32, tp, OFF_SND_WND);
	v->cwnd = ND_LD(u32, tp, OFF_SND_CWND);
	v->ss = ND_LD(u32, tp, OFF_SND_SSTHRESH);
	v->una = ND_LD(u32, tp, OFF_SND_UNA);
	v->srtt = (u32)ND_LD(u32, tp, OFF_SRTT_US) >> 3;
	v->rwnd = ND_LD(u32, tp, OFF_RCV_WND);
#endif
	return 0;
}
