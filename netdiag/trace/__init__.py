"""Probe engine: catalog (probes/*.toml) -> compile/attach (bcc) -> maps -> typed rows -> sinks."""
