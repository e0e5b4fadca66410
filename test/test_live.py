"""The live-stream policies without ROS: clock jumps, throttled error counting, the camera
fallbacks, frames missing, future stamps and the unpaired-stream diagnosis."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from fusion_perception import live
from fusion_perception.live import ErrorLog, FrameStats, LatestSlot, LiveInput
from fusion_perception.pairing import SyncConfig

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000


def msg(stamp_ns: int, frame_id: str = "cam") -> SimpleNamespace:
    """Anything with a ROS header (rclpy and rosbags messages are shaped so)."""
    stamp = SimpleNamespace(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    return SimpleNamespace(header=SimpleNamespace(stamp=stamp, frame_id=frame_id))


class Log:
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.errors: list[str] = []

    def errors_log(self, every_s: float = 2.0) -> ErrorLog:
        return ErrorLog(self.warnings.append, self.errors.append, every_s)


def make_input(log: Log, **kwargs) -> LiveInput:
    sync = SyncConfig(**{k: v for k, v in kwargs.items() if k in SyncConfig.__dataclass_fields__})
    return LiveInput(
        sync,
        log.errors_log(),
        camera_timeout=kwargs.get("camera_timeout", 1.0),
        fallback=kwargs.get("fallback", "none"),
        pair_policy=kwargs.get("pair_policy", "newest"),
    )


def push_pair(source: LiveInput, stamp: int, thermal_delay: int = 0) -> None:
    source.push("rgb", msg(stamp, "rgb_optical"), stamp)
    source.push("thermal", msg(stamp + thermal_delay), stamp)


def test_error_log_counts_every_problem_and_throttles_each_kind_apart():
    log = Log()
    errors = log.errors_log(every_s=0.2)
    for _ in range(5):
        errors.report("rgb_stamp_zero", "rgb stamp is zero")
    errors.report("thermal_frames_missing", "thermal: 1 frame missing", warning=True)
    assert errors.counts == {"rgb_stamp_zero": 5, "thermal_frames_missing": 1}
    assert log.errors == ["rgb stamp is zero"]  # one line for five, at once
    assert log.warnings == ["thermal: 1 frame missing"]  # another kind is not held back
    time.sleep(0.25)
    errors.report("rgb_stamp_zero", "rgb stamp is zero")
    assert log.errors[-1] == "rgb stamp is zero (4 similar since last report)"


def test_a_clock_that_jumps_back_restarts_pairing_and_the_tracks():
    log = Log()
    source = make_input(log, max_age=None)
    for k in range(5):
        push_pair(source, T0 + k * 33 * MS)
    pair = source.next_pair(T0 + 200 * MS)
    assert pair is not None and pair.rgb_stamp_ns == T0 + 4 * 33 * MS
    source.processed(pair)
    assert source.take_clock_jump() is False
    restart = T0 - 60 * 1_000_000_000  # a bag that loops: a minute back
    push_pair(source, restart)
    assert source.errors.counts["rgb_clock_jump"] == 1
    assert "rgb clock jumped back 60.13 s" in log.errors[0]
    assert source.take_clock_jump() is True and source.take_clock_jump() is False
    pair = source.next_pair(restart)
    assert pair is not None and pair.rgb_stamp_ns == restart  # the new timeline pairs at once
    # a small step back is a reordered message, not a jump: rejected and counted
    push_pair(source, restart + 100 * MS)
    source.push("rgb", msg(restart + 50 * MS), restart)
    assert source.errors.counts["rgb_stamp_backwards"] == 1
    assert source.errors.counts["rgb_clock_jump"] == 1


@pytest.mark.parametrize("fallback", ["none", "thermal_only"])
def test_a_silent_rgb_camera_falls_back_to_thermal_once_per_frame(fallback):
    source = make_input(Log(), camera_timeout=0.05, fallback=fallback, max_age=None)
    source.push("rgb", msg(T0, "rgb_optical"), T0)
    time.sleep(0.08)  # the RGB camera goes silent
    stamp = T0 + 100 * MS
    source.push("thermal", msg(stamp, "thermal_optical"), stamp)
    assert source.silent_streams() == ["rgb"]
    pair = source.next_pair(stamp)
    if fallback == "none":
        assert pair is None
        return
    assert pair.rgb is None and pair.thermal.header.frame_id == "thermal_optical"
    assert pair.rgb_stamp_ns == pair.thermal_stamp_ns == stamp
    assert source.rgb_frame_id == "rgb_optical"  # outputs keep the RGB camera's frame
    source.processed(pair)
    assert source.next_pair(stamp) is None  # the same thermal frame is not run twice
    health = source.health(stamp, {"rgb": "/rgb/image", "thermal": "/thermal/image"})
    assert not health.ok and "camera silent for > 0.05 s: rgb (fallback thermal_only)" in (
        health.message
    )
    assert not health.cameras["rgb"].ok and health.cameras["thermal"].ok


def test_frames_missing_from_the_stamps_and_future_stamps_are_flagged():
    log = Log()
    source = make_input(log, max_age=None)
    stamps = [T0 + k * 33 * MS for k in range(20)] + [T0 + k * 33 * MS for k in range(23, 30)]
    for stamp in stamps:
        source.push("thermal", msg(stamp), stamp)
    assert source.cameras["thermal"].gaps.missing == 3  # stamps 20, 21 and 22
    assert source.errors.counts["thermal_frames_missing"] == 1
    assert "3 frame(s) missing" in log.warnings[0]
    ahead = T0 + 40 * 33 * MS
    source.push("rgb", msg(ahead), ahead - 2_000_000_000)  # stamped 2 s ahead of this host
    health = source.health(ahead, {"rgb": "/rgb", "thermal": "/thermal"})
    rgb = health.cameras["rgb"]
    assert not rgb.ok and "rgb stamps 2.00 s in the future (/rgb)" in rgb.text
    assert rgb.values["stamp_ahead_s"] == "2.000"
    assert health.values["thermal_frames_missing"] == 3


@pytest.mark.parametrize(
    ("mode", "advice"),
    [
        ("approximate", "beyond sync.slop 0.020 s; set sync.thermal_offset:=-0.040"),
        ("exact", "and sync.mode is exact; set sync.thermal_offset:=-0.040"),
    ],
)
def test_streams_that_never_pair_get_the_offset_to_set(monkeypatch, mode, advice):
    monkeypatch.setattr(live, "UNPAIRED_WARN_S", 0.0)
    log = Log()
    source = make_input(log, mode=mode, max_age=None)
    for k in range(10):  # 10 Hz, thermal stamped 40 ms after RGB: beyond the 20 ms slop
        push_pair(source, T0 + k * 100 * MS, thermal_delay=40 * MS)
    assert source.next_pair(T0 + 1000 * MS) is None
    topics = {"rgb": "/rgb", "thermal": "/thermal"}
    health = source.health(T0 + 1000 * MS, topics)
    assert not health.ok and advice in health.message
    assert "thermal stamps are 40.0 ms after rgb" in health.message
    assert health.values["thermal_minus_rgb_ms"] == "40.00"
    source.health(T0 + 1000 * MS, topics)
    assert len(log.warnings) == 1  # logged once per episode, repeated in the diagnostics
    # with the advised offset the same stamps pair
    fixed = make_input(Log(), mode=mode, thermal_offset=-0.04, max_age=None)
    push_pair(fixed, T0, thermal_delay=40 * MS)
    assert fixed.next_pair(T0) is not None


def test_streams_that_pair_are_not_diagnosed(monkeypatch):
    monkeypatch.setattr(live, "UNPAIRED_WARN_S", 0.0)
    source = make_input(Log(), max_age=None)
    for k in range(10):
        push_pair(source, T0 + k * 33 * MS, thermal_delay=5 * MS)
    health = source.health(T0 + 400 * MS, {"rgb": "/rgb", "thermal": "/thermal"})
    assert health.ok and health.message == "running"
    assert health.values["thermal_minus_rgb_ms"] == "5.00"


def test_frame_stats_report_means_and_the_worst_age():
    stats = FrameStats()
    stats.record({"decode": 1.0, "forward": 30.0}, age_ms=40.0)
    stats.record({"decode": 3.0, "forward": 50.0}, age_ms=90.0)
    assert stats.processed == 2
    assert stats.values() == {
        "decode_ms": "2.00",
        "forward_ms": "40.00",
        "age_ms_mean": "65.00",
        "age_ms_max": "90.00",
    }


def test_frame_stats_take_stages_from_another_thread_without_counting_pairs():
    stats = FrameStats()
    stats.record({"forward": 30.0}, age_ms=40.0)
    recorder = threading.Thread(
        target=lambda: [stats.record_stage("image_publish", 2.0) for _ in range(2000)]
    )
    recorder.start()
    while recorder.is_alive():  # the diagnostics timer reads while the image thread writes
        stats.values()
    recorder.join()
    assert stats.processed == 1
    assert stats.values()["image_publish_ms"] == "2.00"


def test_latest_slot_hands_over_the_newest_item_and_counts_the_replaced():
    slot = LatestSlot()
    assert slot.take(timeout_s=0.01) is None  # nothing yet
    slot.put("frame 1")
    slot.put("frame 2")  # the taker was busy: frame 1 is never sent
    assert slot.take(timeout_s=0.01) == "frame 2" and slot.replaced == 1
    slot.put("frame 3")
    slot.discard()  # deactivated before it was taken
    assert slot.take(timeout_s=0.01) is None and slot.replaced == 1
    with pytest.raises(ValueError, match="None"):
        slot.put(None)
    taken: list[object] = []
    taker = threading.Thread(target=lambda: taken.append(slot.take()))
    taker.start()  # waits without a timeout until an item or close
    slot.put("frame 4")
    taker.join(timeout=5.0)
    assert taken == ["frame 4"]
    taker = threading.Thread(target=lambda: taken.append(slot.take()))
    taker.start()
    slot.close()  # shutdown wakes a waiting taker with None
    taker.join(timeout=5.0)
    assert not taker.is_alive() and taken == ["frame 4", None]
    slot.put("after close")
    assert slot.take(timeout_s=0.01) is None


def test_fresh_policy_waits_for_the_next_pair_only_when_that_pays():
    period = 100 * MS  # the cameras deliver a pair every 100 ms (10 Hz)
    source = make_input(Log(), max_age=None, pair_policy="fresh")
    for k in range(3):
        push_pair(source, T0 + k * period)
        time.sleep(0.1)
    push_pair(source, T0 + 3 * period)
    pair = source.next_pair(T0)  # completed just now: taken at once
    assert pair is not None and pair.rgb_stamp_ns == T0 + 3 * period
    time.sleep(0.1)
    push_pair(source, T0 + 4 * period)
    time.sleep(0.07)  # the worker frees 70 ms after the pair completed: more than half a period
    assert source.next_pair(T0) is None and source.fresh_waits == 1
    assert not source.wait_for_data(0.0)  # the look counts: the worker sleeps until a message
    push_pair(source, T0 + 5 * period)  # the next pair arrives 30 ms later: taken
    assert source.wait_for_data(0.0)
    pair = source.next_pair(T0)
    assert pair is not None and pair.rgb_stamp_ns == T0 + 5 * period
    time.sleep(0.1)
    push_pair(source, T0 + 6 * period)
    time.sleep(0.07)
    assert source.next_pair(T0) is None  # waits, but no newer pair comes (a camera stopped):
    start = time.monotonic()
    assert not source.wait_for_data(5.0)  # the worker wakes when a period has passed ...
    assert time.monotonic() - start < 1.0
    pair = source.next_pair(T0)  # ... and takes the pair it has
    assert pair is not None and pair.rgb_stamp_ns == T0 + 6 * period
    assert source.fresh_waits == 2
    health = source.health(T0, {"rgb": "/rgb", "thermal": "/thermal"})
    assert health.values["pair_policy"] == "fresh" and health.values["fresh_waits"] == 2
    newest = make_input(Log(), max_age=None)  # the library default takes the newest at once
    for k in range(4):
        push_pair(newest, T0 + k * period)
        time.sleep(0.02)
    time.sleep(0.07)
    assert newest.next_pair(T0).rgb_stamp_ns == T0 + 3 * period


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="fallback: 'sideways'"):
        LiveInput(SyncConfig(), Log().errors_log(), 1.0, "sideways")
    with pytest.raises(ValueError, match="pair_policy: 'oldest' is not one of"):
        LiveInput(SyncConfig(), Log().errors_log(), 1.0, pair_policy="oldest")
    with pytest.raises(ValueError, match=r"sync\.slop: 2\.0 is outside \[0\.0, 1\.0\]"):
        SyncConfig(slop=2.0)
    with pytest.raises(ValueError, match=r"sync\.queue_size: must be an int"):
        SyncConfig(queue_size=2.5)


def test_settings_become_flags_and_node_parameters_from_one_definition():
    import argparse

    from fusion_perception.cli.common import add_thermal_args, thermal_from_args
    from fusion_perception.ros.params import SPECS
    from fusion_perception.settings import add_flags, replace_from_flags

    parser = argparse.ArgumentParser()
    add_flags(parser, SyncConfig, "sync")
    add_thermal_args(parser)
    args = parser.parse_args(["--slop", "0.05", "--sync-mode", "exact"])
    config = replace_from_flags(SyncConfig(), args, "sync")
    assert (config.slop, config.mode, config.queue_size) == (0.05, "exact", 10)
    with pytest.raises(ValueError, match=r"^--slop: 5\.0 is outside \[0\.0, 1\.0\]"):
        replace_from_flags(SyncConfig(), parser.parse_args(["--slop", "5"]), "sync")
    assert thermal_from_args(parser.parse_args([])) is None  # the checkpoint's scheme
    chosen = thermal_from_args(parser.parse_args(["--normalization", "percentile", "--p-lo", "2"]))
    assert chosen.normalizer().params == {
        "p_lo": 2.0,
        "p_hi": 99.0,
        "ema": 0.9,
        "nonfinite_fill": None,
    }
    for argv, message in (
        (["--p-lo", "2"], "--p-lo: needs --normalization"),
        (
            ["--normalization", "minmax", "--range-lo", "1"],
            "--range-lo: applies to --normalization",
        ),
        (["--normalization", "fixed_range", "--range-lo", "1"], "needs --range-lo and --range-hi"),
    ):
        with pytest.raises(ValueError, match=message):
            thermal_from_args(parser.parse_args(argv))
    # the node's parameters carry the same defaults and ranges
    assert SPECS["sync.queue_size"].default == SyncConfig().queue_size
    assert (SPECS["sync.slop"].low, SPECS["sync.slop"].high) == (0.0, 1.0)
    assert SPECS["thermal.normalization"].choices[0] == "checkpoint"
