"""Outbound events: the outbox written with each state change a platform cares about, the platforms' endpoints,
and the signed, retried, ordered delivery to them (README: Events (outbound webhooks)).

A domain package beside `ledger/`: it may import the foundation (`payloop`) and `ledger/` reads, nothing above.
"""
