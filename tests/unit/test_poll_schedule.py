"""The poll scheduler's decisions as pure functions: given what was learned and a task's age."""

from __future__ import annotations

import math
import random
import statistics
from datetime import UTC, datetime, timedelta

import pytest

from relay.polling.schedule import (
    CHANGE_PROBABILITY,
    MIN_LOCATION_SAMPLES,
    MIN_SAMPLES,
    SPARSE_MAX_FACTOR,
    DurationKnowledge,
    PhaseDistribution,
    ScheduleSettings,
    next_poll,
    transition_estimate,
)

SETTINGS = ScheduleSettings(min_interval_s=1.0, max_interval_s=30.0, target_delay_s=1.75)


def lognormal_samples(median: float, sigma: float, n: int = 200, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [median * math.exp(rng.gauss(0, sigma)) for _ in range(n)]


@pytest.fixture(scope="module")
def processing() -> PhaseDistribution:
    # Kling-like: a 5 s std video processes for ~150 s, about ±25%.
    return PhaseDistribution.from_samples(lognormal_samples(150.0, 0.22))


def test_distribution_quantiles_match_the_samples(processing: PhaseDistribution) -> None:
    samples = sorted(lognormal_samples(150.0, 0.22))
    assert processing.quantile(0.5) == pytest.approx(statistics.median(samples), rel=0.05)
    for p in (0.05, 0.25, 0.75, 0.95):
        assert processing.cdf_at(processing.quantile(p)) == pytest.approx(p, abs=0.01)


def test_cold_start_is_the_adaptive_backoff() -> None:
    rng = random.Random(1)
    first = next_poll(
        None, elapsed_s=0, changed=True, previous_interval_s=None, settings=SETTINGS, rng=rng
    )
    assert first.interval_s == 1.0 and first.reason == "backoff"
    grown = next_poll(
        None, elapsed_s=5, changed=False, previous_interval_s=4.0, settings=SETTINGS, rng=rng
    )
    assert grown.interval_s == 6.0
    capped = next_poll(
        None, elapsed_s=90, changed=False, previous_interval_s=29.0, settings=SETTINGS, rng=rng
    )
    assert capped.interval_s == 30.0
    assert 0.9 * 30.0 <= capped.delay_s <= 1.1 * 30.0


def test_polls_are_sparse_while_a_change_is_unlikely(processing: PhaseDistribution) -> None:
    decision = next_poll(
        processing, elapsed_s=5, changed=True, previous_interval_s=None, settings=SETTINGS
    )
    assert decision.reason == "sparse"
    assert 3 * SETTINGS.dense_interval_s < decision.interval_s
    assert decision.interval_s <= SETTINGS.max_interval_s * SPARSE_MAX_FACTOR
    # ...but not past the point where a change has become CHANGE_PROBABILITY likely.
    assert processing.cdf_at(5 + decision.interval_s) <= CHANGE_PROBABILITY + 0.001


def test_polls_never_wait_past_a_likely_change(processing: PhaseDistribution) -> None:
    for elapsed in (60.0, 90.0, 100.0, 110.0):
        decision = next_poll(
            processing, elapsed_s=elapsed, changed=False, previous_interval_s=30, settings=SETTINGS
        )
        survived = processing.cdf_at(elapsed)
        chance = (processing.cdf_at(elapsed + decision.interval_s) - survived) / (1 - survived)
        assert (
            chance <= CHANGE_PROBABILITY + 0.01 or decision.interval_s <= SETTINGS.dense_interval_s
        )


def test_polls_are_dense_around_the_expected_transition(processing: PhaseDistribution) -> None:
    median = processing.quantile(0.5)
    decision = next_poll(
        processing, elapsed_s=median, changed=False, previous_interval_s=10, settings=SETTINGS
    )
    assert decision.reason == "dense"
    assert decision.interval_s == pytest.approx(SETTINGS.dense_interval_s, rel=0.01)
    late = next_poll(
        processing,
        elapsed_s=processing.quantile(0.9),
        changed=False,
        previous_interval_s=3,
        settings=SETTINGS,
    )
    assert late.interval_s <= SETTINGS.dense_interval_s


def test_a_task_outliving_the_distribution_backs_off_bounded(processing: PhaseDistribution) -> None:
    far = processing.quantile(0.999) + 100
    interval = None
    for _ in range(20):
        decision = next_poll(
            processing,
            elapsed_s=far,
            changed=False,
            previous_interval_s=interval,
            settings=SETTINGS,
        )
        assert decision.reason == "outlived"
        interval = decision.interval_s
    assert interval == SETTINGS.max_interval_s


def test_learned_schedule_beats_a_fixed_poll_on_requests_and_delay(
    processing: PhaseDistribution,
) -> None:
    """Over tasks drawn from the learned distribution: fewer polls than every 5 s, seen sooner."""
    rng = random.Random(3)
    truths = lognormal_samples(150.0, 0.22, n=500, seed=11)
    delays, polls = [], []
    for truth in truths:
        t, n, interval, changed = 0.0, 0, None, True
        while t < truth:
            decision = next_poll(
                processing,
                elapsed_s=t,
                changed=changed,
                previous_interval_s=interval,
                settings=SETTINGS,
                rng=rng,
            )
            t, n, interval, changed = t + decision.delay_s, n + 1, decision.interval_s, False
        delays.append(t - truth)
        polls.append(n)
    fixed_polls = statistics.mean(math.ceil(truth / 5.0) for truth in truths)
    assert statistics.mean(polls) < 0.6 * fixed_polls
    assert statistics.median(delays) <= SETTINGS.target_delay_s * 1.15
    assert sorted(delays)[int(0.95 * len(delays))] <= 5.0


def test_knowledge_prefers_the_class_then_the_model() -> None:
    enough = lognormal_samples(150.0, 0.22, n=MIN_SAMPLES)
    few = lognormal_samples(240.0, 0.22, n=MIN_SAMPLES - 1)
    knowledge = DurationKnowledge.from_samples(
        {
            ("kling-video-o1", "duration=5,mode=std", "processing"): enough,
            ("kling-video-o1", "duration=10,mode=std", "processing"): few,
        }
    )
    own = knowledge.lookup("kling-video-o1", "duration=5,mode=std", "processing")
    assert own is not None and own.samples == MIN_SAMPLES
    # A class never seen is scheduled by its model's classes pooled.
    pooled = knowledge.lookup("kling-video-o1", "duration=10,mode=pro", "processing")
    assert pooled is not None and pooled.samples == 2 * MIN_SAMPLES - 1
    assert knowledge.lookup("kling-video-o1", "duration=5,mode=std", "queued") is None
    assert knowledge.lookup("other-model", "", "processing") is None


def test_a_class_with_few_samples_keeps_its_own_median_and_borrows_the_spread() -> None:
    enough = lognormal_samples(150.0, 0.22, n=4 * MIN_SAMPLES)
    few = lognormal_samples(336.0, 0.22, n=MIN_LOCATION_SAMPLES + 2)
    knowledge = DurationKnowledge.from_samples(
        {
            ("kling-video-o1", "duration=5,mode=std", "processing"): enough,
            ("kling-video-o1", "duration=10,mode=pro", "processing"): few,
        }
    )
    borrowed = knowledge.lookup("kling-video-o1", "duration=10,mode=pro", "processing")
    assert borrowed is not None and borrowed.samples == len(few)
    # Centred on its own samples, not on the pool (which the 150 s class dominates)...
    assert 290 < borrowed.quantile(0.5) < 390
    # ...and as narrow, relatively, as the well-learned class.
    own = knowledge.lookup("kling-video-o1", "duration=5,mode=std", "processing")
    assert own is not None
    spread = own.quantile(0.9) / own.quantile(0.1)
    assert abs(borrowed.quantile(0.9) / borrowed.quantile(0.1) - spread) < 0.15 * spread
    # Fewer than MIN_LOCATION_SAMPLES of its own: the model's pool, as before.
    rare = DurationKnowledge.from_samples(
        {
            ("kling-video-o1", "duration=5,mode=std", "processing"): enough,
            ("kling-video-o1", "duration=10,mode=pro", "processing"): few[:2],
        }
    )
    fallback = rare.lookup("kling-video-o1", "duration=10,mode=pro", "processing")
    assert fallback is not None and fallback.samples == len(enough) + 2


def test_a_transition_is_placed_in_the_middle_of_its_window() -> None:
    last = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
    assert transition_estimate(last, last + timedelta(seconds=4)) == last + timedelta(seconds=2)
    assert transition_estimate(last, last - timedelta(seconds=1)) == last


def test_learned_durations_are_reread_in_step_with_the_shortest_phase() -> None:
    from relay.polling.durations import REFRESH_MIN_S, REFRESH_S, DurationModel

    model = DurationModel(store=None)  # type: ignore[arg-type]  # refresh_s reads no store
    assert model.refresh_s() == REFRESH_MIN_S  # nothing learned: the first samples at once
    for median, expected in ((150.0, 7.5), (2000.0, REFRESH_S), (4.0, REFRESH_MIN_S)):
        model.knowledge = DurationKnowledge.from_samples(
            {("m", "", "processing"): lognormal_samples(median, 0.22, n=MIN_SAMPLES)}
        )
        assert model.refresh_s() == pytest.approx(expected, rel=0.1)
