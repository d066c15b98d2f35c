"""Benchmarks that combine lab, node, trace and tune; the result-file format."""
