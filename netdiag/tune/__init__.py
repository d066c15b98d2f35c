"""`netdiag tune`: plan -> diff -> apply (journal first) -> verify -> revert.

Every change netdiag makes to the transport (sysctls per host or netns, a sockops congestion
control policy on a cgroup, a process's RLIMIT_NOFILE, a /etc/sysctl.d file) is a `Change`
with its old and new value, written to the journal (fsync) before anything is touched.
"""
