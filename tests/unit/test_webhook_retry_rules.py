"""What happens after a webhook attempt: success, retry (schedule, jitter, Retry-After), dead."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from email.utils import format_datetime

from relay.core.egress import denied_network, literal_ip_denied
from relay.core.retry_after import parse_retry_after
from relay.delivery.policy import AttemptResult, plan_next_step

SCHEDULE = (5.0, 30.0, 120.0)
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DENY = tuple(ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10", "10.0.0.0/8"))


def result(status: int | None, retry_after: float | None = None) -> AttemptResult:
    return AttemptResult(status, None, None, 0.01, NOW.timestamp(), retry_after)


def test_any_2xx_succeeds() -> None:
    for status in (200, 201, 202, 204, 299):
        assert plan_next_step(result(status), 0, SCHEDULE).status == "succeeded"


def test_failures_follow_the_schedule_with_twenty_percent_jitter() -> None:
    for index, delay in enumerate(SCHEDULE):
        for failure in (result(500), result(302), result(404), result(None)):
            step = plan_next_step(failure, index, SCHEDULE)
            assert step.status == "failed"
            assert step.retry_index == index + 1
            assert delay * 0.8 <= step.retry_delay_s <= delay * 1.2


def test_after_the_schedule_the_delivery_is_dead() -> None:
    step = plan_next_step(result(500), len(SCHEDULE), SCHEDULE)
    assert step.status == "dead" and step.retry_delay_s is None


def test_410_gone_is_dead_at_once_and_disables_the_subscription() -> None:
    step = plan_next_step(result(410), 0, SCHEDULE)
    assert step.status == "dead" and step.disable_subscription


def test_retry_after_wins_when_longer_and_is_capped_at_a_day() -> None:
    assert plan_next_step(result(429, 600), 0, SCHEDULE).retry_delay_s == 600
    assert plan_next_step(result(503, 1), 0, SCHEDULE).retry_delay_s <= 6.0
    assert plan_next_step(result(429, 10**9), 0, SCHEDULE).retry_delay_s == 86400


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = NOW.timestamp()
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(format_datetime(NOW.replace(minute=5), usegmt=True), now) == 300
    assert parse_retry_after(format_datetime(NOW.replace(hour=11), usegmt=True), now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_denied_networks_cover_ipv4_ipv6_and_mapped_addresses() -> None:
    assert denied_network("169.254.169.254", DENY) == ipaddress.ip_network("169.254.0.0/16")
    assert denied_network("::ffff:169.254.169.254", DENY) is not None
    assert denied_network("fe80::1%eth0", DENY) is not None
    assert denied_network("10.1.2.3", DENY) is not None
    assert denied_network("93.184.216.34", DENY) is None
    assert denied_network("example.com", DENY) is None


def test_literal_addresses_in_urls_are_checked_without_dns() -> None:
    assert literal_ip_denied("http://169.254.169.254/latest", DENY)
    assert literal_ip_denied("https://[fe80::1]:8443/hooks", DENY)
    assert literal_ip_denied("https://hooks.example.com/x", DENY) is None
    assert literal_ip_denied("https://93.184.216.34/x", DENY) is None
