"""The risk engine's tables (SQLAlchemy Core) on the shared `payloop.db.metadata` (migration 0014_risk).

- `risk_observations`: one row per deposit or payout the risk engine scored (its first stage writes it, the
  instrument stage adds the card's fingerprint): what the velocity counts and the shared device / instrument links
  are counted over. Nothing else reads the IP address or the device id back.
- `risk_decisions`: what the rules made of each (operation, subject, stage), written once: a retried screening reads
  the first decision back instead of scoring again.
- `risk_cases` + `risk_case_events`: AML cases, at most one active (open or escalated) per player and kind (a
  partial unique index), and their timeline: the hits that opened or joined them, and the reviewer's decisions.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, CheckConstraint, Column, Index, Integer, PrimaryKeyConstraint, String, Table, text

from payloop.db import UtcDateTime, metadata
from risk.types import CASE_KINDS, CASE_STATES, OPERATIONS, STAGES

ID = String(100)
PLAYER_ID = String(128)
CASE_ID = String(40)
DECISION_ID = String(40)
ACTIVE_CASE = "state IN ('open', 'escalated')"
# What a case's timeline holds: the hit that opened it, hits that joined it, a reviewer's decisions.
EVENT_KINDS = ("opened", "hit", "clear", "escalate", "report")


def _one_of(column: str, words: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{word}'" for word in words) + ")"


risk_observations = Table(
    "risk_observations",
    metadata,
    Column("operation", String(16), nullable=False),
    Column("subject_id", ID, nullable=False),
    Column("stage", String(16), nullable=False),  # the last stage that wrote it
    Column("player_id", PLAYER_ID, nullable=False),
    Column("device_id", String(200), nullable=True),
    Column("ip_address", String(45), nullable=True),
    Column("instrument", String(200), nullable=True),
    Column("amount_eur_minor", BigInteger, nullable=True),  # None: no euro rate for the currency
    Column("method", String(40), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint(_one_of("operation", OPERATIONS), name="operation"),
    CheckConstraint(_one_of("stage", STAGES), name="stage"),
    PrimaryKeyConstraint("operation", "subject_id"),
    # Velocity: one subject's operations of one kind within a window.
    *(Index(f"ix_risk_observations_{column}_operation", column, "operation", "created_at")
      for column in ("player_id", "device_id", "instrument", "ip_address")),
    # Links: the players seen with one device or instrument.
    Index("ix_risk_observations_device_id_player_id", "device_id", "player_id"),
    Index("ix_risk_observations_instrument_player_id", "instrument", "player_id"),
)

risk_decisions = Table(
    "risk_decisions",
    metadata,
    Column("decision_id", DECISION_ID, primary_key=True),
    Column("operation", String(16), nullable=False),
    Column("subject_id", ID, nullable=False),
    Column("stage", String(16), nullable=False),
    Column("player_id", PLAYER_ID, nullable=False),
    Column("action", String(16), nullable=False),
    Column("score", Integer, nullable=False),
    Column("level", String(16), nullable=False),
    Column("hits", JSON, nullable=False),  # [{rule, score, reason, mode}]
    Column("shadow_hits", JSON, nullable=False),
    Column("shadow_action", String(16), nullable=False),
    Column("facts", JSON, nullable=False),  # as evaluated; no IP address, no device id
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint(_one_of("operation", OPERATIONS), name="operation"),
    CheckConstraint(_one_of("stage", STAGES), name="stage"),
    Index("uq_risk_decisions_subject", "operation", "subject_id", "stage", unique=True),
    Index("ix_risk_decisions_player_id_created_at", "player_id", "created_at"),
)

risk_cases = Table(
    "risk_cases",
    metadata,
    Column("case_id", CASE_ID, primary_key=True),
    Column("player_id", PLAYER_ID, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", String(1000), nullable=False),  # the opening hit's
    Column("subject_ids", JSON, nullable=False),  # every hit's payments and payouts, first seen first
    Column("facts", JSON, nullable=False),  # the latest hit's figures
    Column("hits", Integer, nullable=False),  # how many hits opened or joined it
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("decided_by", String(128), nullable=True),
    Column("decided_at", UtcDateTime, nullable=True),
    Column("decision_note", String(2000), nullable=True),
    CheckConstraint(_one_of("kind", CASE_KINDS), name="kind"),
    CheckConstraint(_one_of("state", CASE_STATES), name="state"),
    CheckConstraint("(state = 'open') = (decided_at IS NULL)", name="decided"),
    # One active case per player and kind: a new hit joins it (risk/aml.py open_cases).
    Index("uq_risk_cases_active_player_kind", "player_id", "kind", unique=True,
          postgresql_where=text(ACTIVE_CASE), sqlite_where=text(ACTIVE_CASE)),
    Index("ix_risk_cases_player_id_state", "player_id", "state"),
    # The ops list: newest first, overall and per filter (case_id breaks ties, as in the keyset).
    Index("ix_risk_cases_created_at_case_id", "created_at", "case_id"),
    *(Index(f"ix_risk_cases_{column}_created_at", column, "created_at", "case_id") for column in ("state", "kind")),
)

risk_case_events = Table(
    "risk_case_events",
    metadata,
    Column("event_id", Integer, primary_key=True, autoincrement=True),
    Column("case_id", CASE_ID, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(128), nullable=True),  # a reviewer; None for the AML scenarios
    Column("reason", String(2000), nullable=False),  # a hit's sentence, or the reviewer's note
    Column("subject_ids", JSON, nullable=True),
    Column("facts", JSON, nullable=True),
    # A hit's identity (kind, player, the pattern's key): the same pattern seen again joins nothing twice, and a
    # pattern a decided case was about opens no new case.
    Column("hit_key", String(64), nullable=True),
    CheckConstraint(_one_of("kind", EVENT_KINDS), name="kind"),
    Index("ix_risk_case_events_case_id_event_id", "case_id", "event_id"),
    Index("uq_risk_case_events_hit_key", "hit_key", unique=True,
          postgresql_where=text("hit_key IS NOT NULL"), sqlite_where=text("hit_key IS NOT NULL")),
)
