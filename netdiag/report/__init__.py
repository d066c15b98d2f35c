"""Plots, HTML pages and terminal summaries from result files."""
