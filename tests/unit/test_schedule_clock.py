"""The schedule's own clock: slots in a time zone, daylight saving, catch-up, the floor."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from app.domain.schedules import (
    MAX_COUNTED_MISSES,
    InvalidSchedule,
    Preset,
    check_cron,
    latest_slot,
    next_slot,
    shortest_gap,
    to_utc,
    zone_of,
)

PARIS = ZoneInfo("Europe/Paris")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def fired_days(cron: str, start: datetime, end: datetime, tick: timedelta) -> list[datetime]:
    """Slots a ticker waking every ``tick`` fires between ``start`` and ``end``, run as
    ``services.schedules.fire_due`` does: the latest due slot, then the next one."""
    fired: list[datetime] = []
    next_run = next_slot(cron, PARIS, start)
    now = start
    while now <= end:
        if next_run <= now:
            slot, _ = latest_slot(cron, PARIS, next_run, now)
            fired.append(slot)
            next_run = next_slot(cron, PARIS, now)
        now += tick
    return fired


def test_a_daily_run_in_the_hour_that_spring_skips_fires_once_right_after_the_jump() -> None:
    # 29 March 2026: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day.
    fired = fired_days(
        "30 2 * * *", utc(2026, 3, 27, 12), utc(2026, 3, 31, 12), timedelta(minutes=7)
    )
    assert fired == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 0),  # 03:00 CEST, the first minute after the gap
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
        utc(2026, 3, 31, 0, 30),
    ]
    assert [s.astimezone(PARIS).date() for s in fired] == [
        date(2026, 3, 28),
        date(2026, 3, 29),
        date(2026, 3, 30),
        date(2026, 3, 31),
    ]


def test_a_daily_run_in_the_hour_that_autumn_repeats_fires_once_at_its_first_occurrence() -> None:
    # 25 October 2026: 03:00 CEST becomes 02:00 CET; 02:30 happens twice that day.
    fired = fired_days(
        "30 2 * * *", utc(2026, 10, 23, 12), utc(2026, 10, 27, 12), timedelta(minutes=7)
    )
    assert fired == [
        utc(2026, 10, 24, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 0, 30),  # the first 02:30 (CEST); the second (CET, 01:30 UTC) is not run
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
        utc(2026, 10, 27, 1, 30),
    ]


def test_hourly_slots_neither_double_nor_vanish_across_both_changes() -> None:
    spring = fired_days(
        "0 * * * *", utc(2026, 3, 28, 22), utc(2026, 3, 29, 4), timedelta(minutes=5)
    )
    # 00:00, 01:00 CET; 02:00 does not exist and collapses onto 03:00 CEST; 04:00, 05:00, 06:00.
    assert spring == [
        utc(2026, 3, 28, 23),
        utc(2026, 3, 29, 0),
        *[utc(2026, 3, 29, h) for h in (1, 2, 3, 4)],
    ]
    assert len(set(spring)) == len(spring)
    autumn = fired_days(
        "0 * * * *", utc(2026, 10, 24, 22), utc(2026, 10, 25, 4), timedelta(minutes=5)
    )
    # 01:00 and 02:00 CEST, then the clock shows 02:00 again (CET): that wall time ran
    # already; 03:00, 04:00, 05:00 CET.
    assert autumn == [utc(2026, 10, 24, 23), *[utc(2026, 10, 25, h) for h in (0, 2, 3, 4)]]


def test_next_slot_from_the_second_pass_of_a_repeated_hour_does_not_go_back() -> None:
    second_pass = utc(2026, 10, 25, 1, 40)  # 02:40 CET, after the clock went back
    assert next_slot("30 2 * * *", PARIS, second_pass) == utc(2026, 10, 26, 1, 30)
    assert next_slot("45 2 * * *", PARIS, second_pass) == utc(2026, 10, 26, 1, 45)


def test_to_utc_maps_gaps_forward_and_folds_to_the_first_occurrence() -> None:
    assert to_utc(datetime(2026, 3, 29, 2, 30), PARIS) == utc(2026, 3, 29, 1)
    assert to_utc(datetime(2026, 10, 25, 2, 30), PARIS) == utc(2026, 10, 25, 0, 30)
    assert to_utc(datetime(2026, 12, 4, 9, 0), PARIS) == utc(2026, 12, 4, 8)


def test_after_downtime_only_the_latest_missed_slot_runs_and_the_rest_are_counted() -> None:
    since = utc(2026, 12, 1, 5)  # the 06:00 Paris slot of 1 December
    slot, missed = latest_slot("0 6 * * *", PARIS, since, utc(2026, 12, 4, 7))
    assert (slot, missed) == (utc(2026, 12, 4, 5), 3)
    assert latest_slot("0 6 * * *", PARIS, since, utc(2026, 12, 1, 5, 30)) == (since, 0)


def test_a_very_long_downtime_still_runs_the_latest_slot_once() -> None:
    since = utc(2020, 1, 1)
    slot, missed = latest_slot("0 * * * *", PARIS, since, utc(2026, 12, 4, 7, 30))
    assert (slot, missed) == (utc(2026, 12, 4, 7), MAX_COUNTED_MISSES)


@pytest.mark.parametrize(
    ("cron", "gap"),
    [
        ("*/5 * * * *", timedelta(minutes=5)),
        ("0,1 9 * * *", timedelta(minutes=1)),
        ("0 9 * * *", timedelta(days=1)),
        ("0 6 1 * *", timedelta(days=28)),
    ],
)
def test_shortest_gap(cron: str, gap: timedelta) -> None:
    assert shortest_gap(cron) == gap


def test_presets_are_cron_expressions_at_a_time_of_day() -> None:
    assert Preset.DAILY.cron("06:00") == "0 6 * * *"
    assert Preset.WEEKLY.cron("07:30") == "30 7 * * 1"
    assert Preset.MONTHLY.cron("23:59") == "59 23 1 * *"
    for bad in ("24:00", "6:00", "06:60", "noon"):
        with pytest.raises(InvalidSchedule, match=r"^at: "):
            Preset.DAILY.cron(bad)


@pytest.mark.parametrize("bad", ["* * * *", "0 0 * * * *", "61 * * * *", "0 25 * * *", "x y z a b"])
def test_cron_expressions_are_five_valid_fields(bad: str) -> None:
    with pytest.raises(InvalidSchedule, match=r"^cron: "):
        check_cron(bad)


def test_cron_is_normalised_and_zones_are_iana_names() -> None:
    assert check_cron("  0   6 1 * * ") == "0 6 1 * *"
    assert zone_of("Europe/Paris").key == "Europe/Paris"
    with pytest.raises(InvalidSchedule, match=r"^timezone: "):
        zone_of("Mars/Olympus")
