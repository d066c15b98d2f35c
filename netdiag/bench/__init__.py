"""Scenarios that combine lab + node + trace + tune; each writes a result file."""
