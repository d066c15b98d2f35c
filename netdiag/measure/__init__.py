"""Measurements from sock_diag (tcp_info, bbr_info) and active probes; derivations (RTT, BDP)."""
