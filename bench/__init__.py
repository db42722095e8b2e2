"""Benchmarks: digitflow measured side by side with its peers (run through `make bench`)."""
