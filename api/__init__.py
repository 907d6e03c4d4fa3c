"""The public HTTP API: routes, auth, idempotency, error model, webhook verification → signals."""
