"""Sinks: where events and alerts go (one module per sink)."""
