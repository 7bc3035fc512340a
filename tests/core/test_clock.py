import datetime as dt

from shequn.core.clock import local_time_after


def test_in_three_days_at_ten_member_time():
    after = dt.datetime(2026, 3, 6, 23, 30, tzinfo=dt.UTC)  # already 7 March 07:30 in Shanghai
    got = local_time_after("Asia/Shanghai", days=3, at=dt.time(10, 0), after=after)
    assert got.isoformat() == "2026-03-10T10:00:00+08:00"
    assert got.astimezone(dt.UTC) == dt.datetime(2026, 3, 10, 2, 0, tzinfo=dt.UTC)


def test_across_a_dst_change():
    after = dt.datetime(2026, 3, 7, 12, 0, tzinfo=dt.UTC)
    got = local_time_after("America/New_York", days=2, at=dt.time(10, 0), after=after)
    assert got.utcoffset() == dt.timedelta(hours=-4)  # DST began on 8 March
    assert (got.year, got.month, got.day, got.hour) == (2026, 3, 9, 10)
