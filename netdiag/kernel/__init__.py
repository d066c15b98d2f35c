"""Facts and control of the running kernel: capabilities, sysctl, netns, cgroup, tracefs, bcc."""
