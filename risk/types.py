"""The risk engine's vocabulary, shared by the rules file's loader, the evaluator, the fact gatherer, AML and cases.

Money is in minor units; every threshold stated in euros is in euro cents (`*_eur_minor`). A fact that is unknown
is None, and a rule that reads an unknown fact does not match (it is skipped, never a hit).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

OPERATIONS = ("deposit", "payout")
# What a total score leads to, in rising order; the highest threshold reached wins.
ACTIONS = ("allow", "step_up_kyc", "review", "deny")
LEVELS = ("low", "medium", "high")
MODES = ("enforce", "shadow")
# "pre": before the PSP (everything but the instrument is known); "instrument": once the PSP's answer named the
# card (BIN country, fingerprint), the deposit is scored again with those facts.
STAGES = ("pre", "instrument")
VELOCITY_SUBJECTS = ("player", "device", "instrument", "ip")
CASE_KINDS = ("cdd_threshold", "structuring", "rapid_in_out", "unusual_route", "shared_instrument")
CASE_STATES = ("open", "escalated", "cleared", "reported")
CASE_ACTIVE_STATES = ("open", "escalated")  # a payout of a player with such a case goes to review
CASE_DECISIONS = {"clear": "cleared", "escalate": "escalated", "report": "reported"}


@dataclass(frozen=True)
class RiskSubject:
    """One deposit or payout as the screening step knows it, before any fact is gathered."""

    operation: str  # "deposit" | "payout"
    subject_id: str  # payment_id | payout_id
    player_id: str
    amount_minor: int
    currency: str
    method: str | None = None
    country: str | None = None  # declared by the platform (meta.country)
    ip_address: str | None = None  # the client's public address; None when private, loopback or unknown
    device_id: str | None = None
    instrument: str | None = None  # the PSP's instrument fingerprint (stage "instrument")
    bin_country: str | None = None  # the card's BIN country (stage "instrument")
    stage: str = "pre"


@dataclass(frozen=True)
class PlayerStanding:
    """The player's row as a screening that has read it already knows it (the facts need not read it again)."""

    kyc_status: str
    first_seen_at: datetime | None  # None: never seen before this operation


@dataclass(frozen=True)
class RiskFacts:
    """Everything a rule may read (the rules file's fact names are these attributes, plus `count_<subject>_<window>`
    in `velocity`)."""

    operation: str
    amount_minor: int
    currency: str
    amount_eur_minor: int | None  # None: no euro rate for the currency
    method: str | None
    country: str | None
    ip_country: str | None
    device_id: str | None
    instrument: str | None
    bin_country: str | None
    kyc_status: str
    account_age_days: int | None  # since payloop first saw the player
    lifetime_deposits_eur_minor: int  # credited deposits, every currency at the configured rates
    lifetime_deposit_count: int
    lifetime_payouts_eur_minor: int  # paid payouts
    chargebacks: int  # disputes opened against the player's payments, whatever their outcome
    players_on_device: int | None  # players seen with this device, this one included (None: no device id)
    players_on_instrument: int | None  # players seen with this instrument, this one included (None: no instrument)
    # "count_player_1h" → the player's operations of this kind in the last hour, before this one; only the
    # counts the rules file reads are gathered. None for a subject that is unknown (no device, no instrument, no IP).
    velocity: Mapping[str, int | None] = field(default_factory=dict)

    def value(self, name: str) -> object:
        if name.startswith("count_"):
            return self.velocity.get(name)
        return getattr(self, name)


@dataclass(frozen=True)
class VelocityCount:
    """`count_<subject>_<window>`: a subject's operations within the last `window_seconds`."""

    name: str
    subject: str  # one of VELOCITY_SUBJECTS
    window_seconds: int


@dataclass(frozen=True)
class RuleHit:
    rule: str
    score: int
    reason: str
    mode: str  # "enforce" | "shadow"


@dataclass(frozen=True)
class RiskDecision:
    """What the rules made of one payment: the enforced hits' total and its action and level; shadow hits are
    recorded with what they would have done, never acted on."""

    action: str  # one of ACTIONS
    score: int
    level: str  # one of LEVELS
    hits: tuple[RuleHit, ...] = ()
    shadow_hits: tuple[RuleHit, ...] = ()
    shadow_action: str = "allow"  # the action had the shadow rules been enforced too
    stage: str = "pre"


@dataclass(frozen=True)
class Market:
    """KYC gates of one market (a country, or the default for unlisted ones)."""

    kyc_before_first_deposit: bool = False
    kyc_deposit_threshold_eur_minor: int | None = 200_000  # KYC once lifetime deposits (with this one) reach it
    kyc_before_payout: bool = False


@dataclass(frozen=True)
class AmlSettings:
    cdd_threshold_eur_minor: int = 200_000  # single or linked operations within the window, per direction
    cdd_window_hours: int = 24
    structuring_threshold_eur_minor: int = 200_000  # operations just below this…
    structuring_margin_percent: int = 10  # …within this share of it…
    structuring_min_operations: int = 3  # …this many or more…
    structuring_window_hours: int = 72  # …within this window
    rapid_in_out_window_hours: int = 24  # a payout this soon after the last deposit…
    rapid_in_out_min_turnover_percent: int = 100  # …with turnover since it below this share of it
    shared_instrument_min_players: int = 2  # an instrument or device used by this many players (or more)


@dataclass(frozen=True)
class CaseHit:
    """An AML scenario's finding for one player: opens a case of `kind`, or joins the open one."""

    kind: str  # one of CASE_KINDS
    player_id: str
    reason: str  # a sentence for the reviewer
    subject_ids: tuple[str, ...]  # the payments / payouts that make the pattern
    facts: Mapping[str, object] = field(default_factory=dict)  # JSON-able figures (sums in euro cents, counts)
    # What makes the pattern the same when found again (default: its subject ids): a hit already on a case's
    # timeline opens or joins nothing.
    key: str = ""


@dataclass(frozen=True)
class StoredDecision:
    decision_id: str
    operation: str
    subject_id: str
    player_id: str
    stage: str
    decision: RiskDecision
    facts: Mapping[str, object]  # JSON-able, as evaluated (no IP address, no device id: only whether one was known)
    created_at: datetime
