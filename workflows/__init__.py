"""Deterministic workflow code: deposit (and later withdrawal, reconciliation) with their types."""
