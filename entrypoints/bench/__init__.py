"""`payloop bench`: load, latency and memory figures of a running stack, its Temporal floor, and the ledger."""
