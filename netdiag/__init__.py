"""netdiag — tune and diagnose the Linux TCP transport under peer-to-peer nodes."""

__version__ = "0.1.0"
