"""One zone database for Python and Rust: the core reads the TZif bytes ``zoneinfo`` reads, in every year."""

from __future__ import annotations

import os
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import tzdata
from prometheus_client import REGISTRY

from schedsvc._timing import Schedule
from schedsvc.domain.errors import InvalidScheduleError
from schedsvc.timing import ZoneDatabase, preview, zone_database
from schedsvc.timing.zonedb import database, tzif


def test_berlin_keeps_summer_time_after_2099() -> None:
    # Issue 15: the core used to know no transition after 2099 and fired at 13:00+02:00.
    berlin = ZoneInfo("Europe/Berlin")
    schedule = {"kind": "cron", "expression": "0 12 * * *", "timezone": "Europe/Berlin"}
    fires = preview(schedule, datetime(2100, 7, 1, tzinfo=UTC), 1)
    assert fires == [datetime(2100, 7, 1, 12, tzinfo=berlin)]
    assert fires[0].utcoffset() == timedelta(hours=2)
    assert fires[0].astimezone(UTC) == datetime(2100, 7, 1, 10, tzinfo=UTC)
    # And in winter, and in the last year the schedules support.
    assert preview(schedule, datetime(9999, 1, 10, tzinfo=UTC), 1) == [datetime(9999, 1, 10, 12, tzinfo=berlin)]
    assert preview(schedule, datetime(9999, 7, 10, tzinfo=UTC), 1)[0].astimezone(UTC).hour == 10


def test_tzif_returns_the_file_zoneinfo_reads() -> None:
    root = next(p for p in zoneinfo.TZPATH if os.path.isfile(os.path.join(p, "Europe/Berlin")))
    assert tzif("Europe/Berlin") == Path(root, "Europe/Berlin").read_bytes()


@pytest.mark.parametrize("key", ["Mars/Base", "America", "../../etc/passwd", "/etc/passwd", "", "zone.tab"])
def test_tzif_knows_no_zone_zoneinfo_rejects(key: str) -> None:
    assert tzif(key) is None
    with pytest.raises(ValueError, match="unknown time zone"):
        Schedule.cron("0 0 * * *", key)


@pytest.mark.parametrize("key", ["Mars/Base", "America", "../../etc/passwd"])
def test_preview_names_the_zone_field(key: str) -> None:
    # "America" is a directory: zoneinfo raises IsADirectoryError for it, which used to escape as a 500.
    schedule = {"kind": "calendar", "every": 1, "unit": "days", "time": "09:00", "timezone": key}
    with pytest.raises(InvalidScheduleError, match="unknown time zone") as raised:
        preview(schedule, datetime(2026, 1, 1, tzinfo=UTC), 1)
    assert raised.value.field == "schedule.timezone"


@pytest.fixture
def own_tzpath(tmp_path: Path) -> Iterator[Path]:
    """``zoneinfo.TZPATH`` set to an empty directory of our own for the test, then restored."""
    saved = zoneinfo.TZPATH
    zoneinfo.reset_tzpath([str(tmp_path)])
    try:
        yield tmp_path
    finally:
        zoneinfo.reset_tzpath(saved)


def test_rust_reads_the_zones_zoneinfo_reads(own_tzpath: Path) -> None:
    # A zone that exists only in our TZPATH directory, under a name no other test uses: Kolkata's data.
    kolkata = tzif("Asia/Kolkata")
    assert kolkata is not None
    (own_tzpath / "Test").mkdir()
    (own_tzpath / "Test" / "Kolkata_Copy").write_bytes(kolkata)
    schedule = Schedule.cron("0 9 * * *", "Test/Kolkata_Copy")
    after = datetime(2026, 6, 1, tzinfo=UTC)
    fire = schedule.next_after(int(after.timestamp()) * 1000)
    assert fire == int(datetime(2026, 6, 1, 3, 30, tzinfo=UTC).timestamp()) * 1000
    assert ZoneInfo("Test/Kolkata_Copy").utcoffset(after) == timedelta(hours=5, minutes=30)


def test_without_a_system_database_zones_come_from_the_tzdata_package(own_tzpath: Path) -> None:
    packaged = resources.files("tzdata.zoneinfo.America").joinpath("New_York").read_bytes()
    assert tzif("America/New_York") == packaged
    assert database.__wrapped__() == ZoneDatabase(tzdata.IANA_VERSION, f"tzdata {tzdata.__version__}")


def test_a_system_database_reports_its_release(own_tzpath: Path) -> None:
    (own_tzpath / "UTC").write_bytes(tzif("UTC") or b"")
    (own_tzpath / "tzdata.zi").write_text("# version 2031z\nR ...\n")
    assert database.__wrapped__() == ZoneDatabase("2031z", str(own_tzpath))
    (own_tzpath / "tzdata.zi").unlink()
    (own_tzpath / "+VERSION").write_text("2032a\n")
    assert database.__wrapped__().version == "2032a"


def test_database_version_is_exposed() -> None:
    current = zone_database()
    assert current.version != "unknown"
    labels = {"version": current.version, "source": current.source}
    assert REGISTRY.get_sample_value("schedsvc_zone_database_info", labels) == 1.0
