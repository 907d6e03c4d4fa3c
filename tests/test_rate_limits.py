"""The rate limiter on its own (api/rate_limits.py): in memory, on a real Redis shared by two limiters (as by two
API processes), and with Redis unreachable. Over HTTP, with the API's answers: tests/e2e/test_rate_limits.py."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid

import pytest
from limits import parse
from limits.aio.strategies import FixedWindowRateLimiter
from pydantic import ValidationError

from api.rate_limits import RateLimits, SweptMemoryStorage, source_key
from payloop.settings import Settings
from tests.conftest import redis_url


def settings(**overrides: object) -> Settings:
    return Settings(**({"redis_key_prefix": f"test-{uuid.uuid4().hex[:12]}"} | overrides))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.mark.parametrize("notation", ["lots", "5/fortnight", "5 per second; often", "-1/second"])
def test_a_limit_the_limits_notation_cannot_read_stops_start_up(notation: str) -> None:
    with pytest.raises(ValidationError, match="rate_limit_payments"):
        Settings(rate_limit_payments=notation)


def test_several_limits_and_no_limit_are_accepted() -> None:
    limits = RateLimits(Settings(rate_limit_payments="50/second; 1000/minute", rate_limit_webhooks=""))
    assert [str(item) for item in limits.payments] == ["50 per 1 second", "1000 per 1 minute"]
    assert limits.webhooks == []


@pytest.mark.parametrize(("address", "key"), [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),  # the same host's /64: the same count
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("::ffff:203.0.113.7", "203.0.113.7"),  # IPv4 over an IPv6 socket counts as the IPv4 address
    ("testclient", "testclient"),
])
def test_webhook_sources_are_counted_by_address_and_ipv6_by_its_64(address: str, key: str) -> None:
    assert source_key(address) == key


async def test_in_memory_each_client_has_its_own_count_and_a_refusal_says_when_to_retry() -> None:
    limits = RateLimits(settings(rate_limit_payments="3/minute"))
    assert [await limits.check_client("casino-a") for _ in range(3)] == [None, None, None]
    refusal = await limits.check_client("casino-a")
    assert refusal is not None and refusal.limit == "3 per 1 minute"
    assert 1 <= refusal.retry_after_seconds <= 60
    assert await limits.check_client("casino-b") is None
    assert limits.refused["payments"] == 1


async def test_with_several_limits_the_one_reached_refuses() -> None:
    limits = RateLimits(settings(rate_limit_webhooks="100/hour; 2/minute"))
    assert await limits.check_webhook("card", "203.0.113.7") is None
    assert await limits.check_webhook("card", "203.0.113.7") is None
    refusal = await limits.check_webhook("card", "203.0.113.7")
    assert refusal is not None and refusal.limit == "2 per 1 minute"
    assert await limits.check_webhook("ewallet", "203.0.113.7") is None  # per PSP endpoint
    assert await limits.check_webhook("card", "203.0.113.8") is None  # per source


async def test_a_recheck_is_allowed_once_per_interval_however_many_other_payments_are_nudged() -> None:
    limits = RateLimits(settings(status_recheck_interval_seconds=600))
    assert await limits.may_recheck("deposit-pay_target")
    for i in range(10_001):  # what flushed the old per-process dict
        await limits.may_recheck(f"deposit-pay_{i:024x}")
    assert not await limits.may_recheck("deposit-pay_target")
    assert limits.rechecks["allowed"] == 10_002 and limits.rechecks["suppressed"] == 1


async def test_two_limiters_on_one_redis_share_every_count() -> None:
    shared = settings(redis_url=redis_url(), rate_limit_payments="4/minute", status_recheck_interval_seconds=600,
                      rate_limit_webhook_rejection_log="2/minute")
    first, second = RateLimits(shared), RateLimits(shared)
    try:
        assert await first.check_client("casino-a") is None
        assert await second.check_client("casino-a") is None
        assert await first.check_client("casino-a") is None
        assert await second.check_client("casino-a") is None
        refusal = await first.check_client("casino-a")
        assert refusal is not None and 1 <= refusal.retry_after_seconds <= 60
        assert (await first.may_recheck("deposit-pay_x"), await second.may_recheck("deposit-pay_x")) == (True, False)
        assert [await limits.may_log_rejection("card", "bad_signature") for limits in (first, second, first)] == [
            True, True, False]
        assert first.rejections_not_logged == {("card", "bad_signature"): 1}
        assert first.storage_errors == second.storage_errors == 0
    finally:
        await first.close()
        await second.close()


async def test_another_key_prefix_is_another_count() -> None:
    url = redis_url()
    first = RateLimits(settings(redis_url=url, rate_limit_payments="1/minute"))
    second = RateLimits(settings(redis_url=url, rate_limit_payments="1/minute"))
    try:
        assert await first.check_client("casino-a") is None
        assert await second.check_client("casino-a") is None  # another environment sharing the Redis
    finally:
        await first.close()
        await second.close()


async def test_with_redis_unreachable_each_process_still_limits_on_its_own(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="payloop.api.rate_limits")
    limits = RateLimits(settings(redis_url=f"redis://127.0.0.1:{closed_port()}/0", rate_limit_payments="2/minute",
                                 status_recheck_interval_seconds=600))
    try:
        assert await limits.check_client("casino-a") is None
        assert await limits.check_client("casino-a") is None
        assert await limits.check_client("casino-a") is not None  # counted in memory meanwhile
        assert await limits.may_recheck("deposit-pay_x")
        assert not await limits.may_recheck("deposit-pay_x")
    finally:
        await limits.close()
    assert limits.storage_errors >= 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "payloop.api.rate_limits"]
    assert len(warnings) == 1 and "unreachable" in warnings[0]  # once, not once per request


async def test_in_memory_expired_keys_are_swept_so_memory_stays_bounded() -> None:
    """The sweep runs at most once a second (not on every hit, see SweptMemoryStorage), but it does run."""
    storage = SweptMemoryStorage()
    limiter = FixedWindowRateLimiter(storage)
    one_per_second = parse("1/second")
    for i in range(1000):  # e.g. re-check keys for 1,000 invented payment ids
        assert await limiter.hit(one_per_second, "recheck", str(i))
    assert len(storage.storage) == 1000
    for _ in range(100):
        await limiter.hit(one_per_second, "recheck", "now")
        await asyncio.sleep(0.1)  # the sweep is a task of its own
        if len(storage.storage) <= 1:
            break
    assert list(storage.storage) == ["LIMITER/recheck/now/1/1/second"]
