"""The incidents package's copies of workflows.types' status words (incidents may not import workflows) stay tied to
them: report.py's final sets, and detection.py's failed and under-way ones as they are."""

from __future__ import annotations

from incidents import detection, report
from workflows.types import DepositStatus, PayoutStatus


def deposit_words() -> set[str]:
    return {value for name, value in vars(DepositStatus).items() if name.isupper() and isinstance(value, str)}


def payout_words() -> set[str]:
    return {value for name, value in vars(PayoutStatus).items() if name.isupper() and isinstance(value, str)}


def test_the_reports_final_sets_are_the_workflows_but_a_deposit_in_review_waits_for_a_person() -> None:
    assert report.DEPOSIT_FINAL == DepositStatus.FINAL - {DepositStatus.IN_REVIEW}
    assert report.PAYOUT_FINAL == PayoutStatus.FINAL
    assert report.RUNNING not in deposit_words() | payout_words()  # "running" names no status of its own


def test_detections_words_are_deposit_and_payout_statuses_of_the_right_kind() -> None:
    assert set(detection.DEPOSIT_FAILED) <= DepositStatus.FINAL
    assert set(detection.DEPOSIT_ENDED) <= DepositStatus.FINAL
    assert set(detection.DEPOSIT_UNDER_WAY) <= deposit_words() - DepositStatus.FINAL
    assert set(detection.PAYOUT_UNDER_WAY) <= payout_words() - PayoutStatus.FINAL
