"""The KYC nudge is best effort: waiting payouts re-read KYC by themselves, so an unreachable Temporal must not
turn a stored KYC change into an error."""

from __future__ import annotations

from temporalio.service import RPCError, RPCStatusCode

from api.routes.payouts import nudge_kyc_waiting


class UnreachableTemporal:
    def list_workflows(self, query: str):  # noqa: ANN201 - the client's async iterator
        raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")


async def test_an_unreachable_temporal_is_logged_not_raised(caplog) -> None:  # noqa: ANN001
    await nudge_kyc_waiting(UnreachableTemporal(), "p-1")  # type: ignore[arg-type]
    assert "could not be told now" in caplog.text
