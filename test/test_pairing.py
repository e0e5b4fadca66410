"""Tests for fusion_perception.pairing, driven by synthetic stamp sequences."""

import threading
import time

import numpy as np
import pytest

from fusion_perception.pairing import (
    REJECT_BACKWARDS,
    REJECT_REASONS,
    REJECT_REPEATED,
    REJECT_ZERO,
    STREAMS,
    PairingEngine,
)

MS = 1_000_000
T0 = 1_700_000_000 * 10**9  # a realistic epoch stamp


def stamps(rate_hz, n, jitter_ns=0, seed=0, lag_ns=0):
    """n stamps at rate_hz starting at T0 + lag_ns, each jittered uniformly in +-jitter_ns."""
    jitter = np.random.default_rng(seed).integers(-jitter_ns, jitter_ns + 1, size=n)
    return [T0 + lag_ns + round(i * 1e9 / rate_hz) + int(j) for i, j in enumerate(jitter)]


def arrivals(rgb, thermal):
    """Merge both streams into arrival order (by stamp), items are (stream, index)."""
    events = [(s, "rgb", i) for i, s in enumerate(rgb)]
    events += [(s, "thermal", i) for i, s in enumerate(thermal)]
    return sorted(events)


def run_fast_consumer(engine, rgb, thermal):
    """Push in stamp order and take after every push (a consumer faster than the cameras)."""
    pairs = []
    for stamp, stream, i in arrivals(rgb, thermal):
        assert engine.push(stream, stamp, (stream, i)).accepted
        pair = engine.take_newest_pair(now_ns=stamp)
        if pair is not None:
            pairs.append(pair)
    return pairs


def assert_counts_add_up(engine, now_ns=T0):
    st = engine.stats(now_ns)
    for stream in STREAMS:
        s = st.streams[stream]
        total = s.paired + s.evicted + s.skipped + s.stale + s.buffered
        assert s.received == total + sum(s.rejected.values()), (stream, s)
        assert s.paired == st.pairs
    return st


def test_jittered_30hz_vs_25hz_pair_within_slop():
    # 2 s: rgb every 33.3 ms, thermal every 40 ms, +-1 ms jitter. In each 200 ms cycle the stamps
    # come within 10 ms three times: (rgb 6k, th 5k) ~0 ms, (6k+1, 5k+1) and (6k+5, 5k+4)
    # ~6.7 ms apart; every other rgb frame is >= 11.3 ms from any thermal frame.
    rgb = stamps(30, 60, jitter_ns=1 * MS, seed=1)
    thermal = stamps(25, 50, jitter_ns=1 * MS, seed=2)
    engine = PairingEngine(slop_ns=10 * MS, queue_size=3)
    pairs = run_fast_consumer(engine, rgb, thermal)
    got = [(p.rgb[1], p.thermal[1]) for p in pairs]
    expected = []
    for k in range(10):
        expected += [(6 * k, 5 * k), (6 * k + 1, 5 * k + 1), (6 * k + 5, 5 * k + 4)]
    assert got == expected
    for p in pairs:
        assert abs(p.dt_ns) <= 10 * MS
        assert p.dt_ns == thermal[p.thermal[1]] - rgb[p.rgb[1]]
        assert p.stamp_ns == p.rgb_stamp_ns == rgb[p.rgb[1]]
    st = assert_counts_add_up(engine)
    assert st.pairs == 30
    assert st.streams["rgb"].unmatched == 60 - 30 - st.streams["rgb"].buffered
    assert st.streams["thermal"].unmatched == 50 - 30 - st.streams["thermal"].buffered


def test_offset_corrects_constant_lag():
    # the thermal driver stamps 45 ms late: no pair without correction (residual 11.7 ms)
    rgb = stamps(30, 30, jitter_ns=1 * MS, seed=3)
    thermal = stamps(30, 30, jitter_ns=1 * MS, seed=4, lag_ns=45 * MS)
    assert run_fast_consumer(PairingEngine(slop_ns=5 * MS), rgb, thermal) == []
    for offsets in ({"thermal": -45 * MS}, {"rgb": 45 * MS}):
        engine = PairingEngine(slop_ns=5 * MS, offsets_ns=offsets)
        pairs = run_fast_consumer(engine, rgb, thermal)
        assert [(p.rgb[1], p.thermal[1]) for p in pairs] == [(i, i) for i in range(30)]
        for p in pairs:
            assert p.rgb_stamp_ns == rgb[p.rgb[1]]  # original stamps, not corrected ones
            assert p.thermal_stamp_ns == thermal[p.thermal[1]]
            assert p.dt_ns == p.thermal_stamp_ns - p.rgb_stamp_ns - 45 * MS
            assert abs(p.dt_ns) <= 2 * MS


def test_exact_mode_pairs_equal_stamps_only():
    rgb = [T0 + k * 100 * MS for k in range(1, 5)]
    thermal = [rgb[0], rgb[1] + 1, rgb[2], rgb[2] + 50 * MS, rgb[3]]
    engine = PairingEngine(mode="exact", slop_ns=50 * MS)
    pairs = run_fast_consumer(engine, rgb, thermal)
    assert [(p.rgb[1], p.thermal[1]) for p in pairs] == [(0, 0), (2, 2), (3, 4)]
    assert all(p.dt_ns == 0 for p in pairs)
    # offsets apply in exact mode too: thermal stamped 5 ms late
    engine = PairingEngine(mode="exact", offsets_ns={"thermal": -5 * MS})
    pairs = run_fast_consumer(engine, rgb, [s + 5 * MS for s in rgb])
    assert [(p.rgb[1], p.thermal[1]) for p in pairs] == [(i, i) for i in range(4)]


def test_buffer_bound_evicts_oldest():
    engine = PairingEngine(slop_ns=5 * MS, queue_size=3)
    results = [engine.push("rgb", T0 + k * 33 * MS, k) for k in range(10)]
    assert [r.evicted for r in results] == [0, 0, 0] + [1] * 7
    st = engine.stats(T0)
    assert st.streams["rgb"].buffered == 3
    assert st.streams["rgb"].evicted == 7
    # an early thermal frame can only pair with a retained rgb frame
    engine.push("thermal", T0 + 7 * 33 * MS + 1 * MS, "th")
    pair = engine.take_newest_pair(T0 + 10 * 33 * MS)
    assert pair.rgb == 7
    assert engine.take_newest_pair(T0 + 10 * 33 * MS) is None
    assert assert_counts_add_up(engine).streams["rgb"].buffered == 2


def test_stale_pairs_discarded_and_counted():
    engine = PairingEngine(slop_ns=5 * MS, max_age_ns=100 * MS)
    engine.push("rgb", T0, "old_rgb")
    engine.push("thermal", T0 + 2 * MS, "old_th")
    assert engine.take_newest_pair(now_ns=T0 + 150 * MS) is None
    st = engine.stats(T0 + 150 * MS)
    assert st.stale_pairs == 1
    assert st.pairs == 0
    assert st.streams["rgb"].stale == 1
    assert st.streams["thermal"].stale == 1
    assert st.streams["rgb"].buffered == 0
    # a fresh pair within max_age is delivered; age is measured from the rgb stamp
    engine.push("rgb", T0 + 200 * MS, "rgb")
    engine.push("thermal", T0 + 195 * MS, "th")
    pair = engine.take_newest_pair(now_ns=T0 + 300 * MS)
    assert (pair.rgb, pair.thermal) == ("rgb", "th")
    assert_counts_add_up(engine)


def test_backwards_repeated_and_zero_stamps_rejected():
    engine = PairingEngine(slop_ns=5 * MS)
    assert engine.push("rgb", T0 + 100 * MS, "a").accepted
    assert engine.push("rgb", T0 + 200 * MS, "b").accepted
    back = engine.push("rgb", T0 + 150 * MS, "late")
    assert (back.accepted, back.reason) == (False, REJECT_BACKWARDS)
    rep = engine.push("rgb", T0 + 200 * MS, "again")
    assert (rep.accepted, rep.reason) == (False, REJECT_REPEATED)
    zero = engine.push("thermal", 0, "unset")
    assert (zero.accepted, zero.reason) == (False, REJECT_ZERO)
    engine.push("thermal", T0 + 151 * MS, "th")
    assert engine.take_newest_pair(T0 + 200 * MS) is None  # "late" was never buffered
    st = assert_counts_add_up(engine)
    assert st.streams["rgb"].rejected == {REJECT_BACKWARDS: 1, REJECT_REPEATED: 1, REJECT_ZERO: 0}
    assert st.streams["thermal"].rejected[REJECT_ZERO] == 1
    assert st.streams["rgb"].last_stamp_ns == T0 + 200 * MS
    # after a clock jump, reset() accepts the older stamps again
    engine.reset()
    assert engine.push("rgb", T0 + 150 * MS, "late").accepted
    assert engine.take_newest_pair(T0 + 200 * MS) is None  # buffers were emptied
    assert_counts_add_up(engine)


def test_slow_consumer_gets_newest_pair_without_growth():
    # both 30 Hz, thermal 5 ms after rgb; the worker only takes after every 10th thermal frame
    n = 100
    rgb = stamps(30, n)
    thermal = stamps(30, n, lag_ns=5 * MS)
    engine = PairingEngine(slop_ns=10 * MS, queue_size=3)
    taken = []
    for stamp, stream, i in arrivals(rgb, thermal):
        engine.push(stream, stamp, i)
        st = engine.stats(stamp)
        assert all(st.streams[s].buffered <= 3 for s in STREAMS)
        if stream == "thermal" and i % 10 == 9:
            pair = engine.take_newest_pair(now_ns=stamp)
            assert (pair.rgb, pair.thermal) == (i, i)  # the newest frames, not queued old ones
            assert stamp - pair.stamp_ns == 5 * MS
            taken.append(pair)
    assert len(taken) == 10
    st = assert_counts_add_up(engine, now_ns=thermal[-1])
    for s in STREAMS:
        # per 10 frames: 7 evicted from the 3-deep buffer, 2 skipped by the take, 1 paired
        assert (st.streams[s].evicted, st.streams[s].skipped, st.streams[s].paired) == (70, 20, 10)


def test_stats_values_and_window():
    engine = PairingEngine(slop_ns=25 * MS, stats_window=100)
    windowed = PairingEngine(slop_ns=25 * MS, stats_window=10)
    for k in range(20):
        t = T0 + k * 50 * MS
        for e in (engine, windowed):
            e.push("rgb", t, k)
            e.push("thermal", t + k * MS, k)  # |dt| = k ms
            assert e.take_newest_pair(now_ns=t + 30 * MS).dt_ns == k * MS
    now = T0 + 19 * 50 * MS + 40 * MS
    st = engine.stats(now)
    assert st.pairs == 20
    assert st.pair_rate_hz == pytest.approx(20.0)  # takes every 50 ms
    assert st.dt_abs_mean_ns == pytest.approx(9.5 * MS)  # mean of 0..19 ms
    assert st.dt_abs_p95_ns == pytest.approx(18.05 * MS)  # linear: 0.95 * 19 ms
    assert st.streams["rgb"].last_age_ns == 40 * MS
    assert st.streams["thermal"].last_age_ns == 40 * MS - 19 * MS
    st = windowed.stats(now)
    assert st.pairs == 20
    assert st.pair_rate_hz == pytest.approx(20.0)
    assert st.dt_abs_mean_ns == pytest.approx(14.5 * MS)  # mean of 10..19 ms
    assert st.dt_abs_p95_ns == pytest.approx(18.55 * MS)  # 10 + 0.95 * 9 ms
    empty = PairingEngine().stats(T0)
    assert (empty.pairs, empty.pair_rate_hz, empty.dt_abs_mean_ns, empty.dt_abs_p95_ns) == (
        0,
        0.0,
        None,
        None,
    )
    assert empty.streams["rgb"].last_age_ns is None
    assert empty.streams["rgb"].rejected == dict.fromkeys(REJECT_REASONS, 0)


def test_wait_for_data():
    engine = PairingEngine()
    assert engine.wait_for_data(0.01) is False
    engine.push("rgb", T0, 0)
    assert engine.wait_for_data(0.01) is True
    engine.take_newest_pair(T0)
    assert engine.wait_for_data(0.01) is False
    timer = threading.Timer(0.05, engine.push, args=("thermal", T0, 0))
    timer.start()
    assert engine.wait_for_data(5.0) is True
    timer.join()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "latest"}, "mode must be one of"),
        ({"slop_ns": -1}, "slop_ns must be >= 0"),
        ({"slop_ns": 0.02}, "slop_ns must be an int"),
        ({"queue_size": 0}, "queue_size must be >= 1"),
        ({"offsets_ns": {"depth": 5}}, r"unknown stream\(s\) \['depth'\]"),
        ({"offsets_ns": {"thermal": 1.5}}, r"offsets_ns\['thermal'\]"),
        ({"max_age_ns": -5}, "max_age_ns"),
        ({"stats_window": 0}, "stats_window"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PairingEngine(**kwargs)


def test_bad_push_arguments_raise():
    engine = PairingEngine()
    with pytest.raises(ValueError, match="'depth'"):
        engine.push("depth", T0, None)
    with pytest.raises(ValueError, match="stamp_ns"):
        engine.push("rgb", 1.5e9, None)
    with pytest.raises(ValueError, match="stamp_ns must be >= 0"):
        engine.push("rgb", -1, None)


def test_two_thread_stress_no_duplicates_and_counts_add_up():
    # two camera threads replay 30 Hz streams at 10x speed against one wall-clock start, so
    # they interleave as real callbacks do; the worker "infers" for 3 frame periods per pair
    n = 300
    speedup = 10
    slop = 10 * MS
    rgb = stamps(30, n, jitter_ns=2 * MS, seed=5)
    thermal = stamps(30, n, jitter_ns=2 * MS, seed=6, lag_ns=3 * MS)
    engine = PairingEngine(slop_ns=slop, queue_size=3, max_age_ns=60 * MS)
    latest = [T0]
    done = threading.Event()
    pairs = []
    start = time.perf_counter()

    def produce(stream, seq):
        for i, stamp in enumerate(seq):
            delay = start + (stamp - T0) / 1e9 / speedup - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            engine.push(stream, stamp, (stream, i))
            latest[0] = max(latest[0], stamp)
            if i % 100 == 50:
                engine.push(stream, stamp, (stream, "dup"))  # rejected as repeated

    def consume():
        while not done.is_set():
            engine.wait_for_data(0.01)
            pair = engine.take_newest_pair(now_ns=latest[0])
            if pair is not None:
                pairs.append(pair)
                time.sleep(3 / 30 / speedup)

    producers = [
        threading.Thread(target=produce, args=("rgb", rgb)),
        threading.Thread(target=produce, args=("thermal", thermal)),
    ]
    consumer = threading.Thread(target=consume)
    consumer.start()
    for t in producers:
        t.start()
    for t in producers:
        t.join(timeout=30)
    done.set()
    consumer.join(timeout=30)
    assert not consumer.is_alive()

    assert len(pairs) > n // 10, f"only {len(pairs)} pairs of {n} frames"
    for stream in STREAMS:
        ids = [getattr(p, stream)[1] for p in pairs]
        assert len(set(ids)) == len(ids), f"{stream} item delivered twice"
        assert ids == sorted(ids), f"{stream} pairs went back in time"
        assert "dup" not in ids
    assert all(abs(p.dt_ns) <= slop for p in pairs)
    st = assert_counts_add_up(engine, now_ns=latest[0])
    assert st.pairs == len(pairs)
    for stream in STREAMS:
        assert st.streams[stream].received == n + n // 100
        assert st.streams[stream].rejected[REJECT_REPEATED] == n // 100


def test_stamp_gaps_count_the_frames_a_camera_never_delivered():
    from fusion_perception.pairing import StampGapCounter

    period = 33_333_333  # 30 Hz
    rng = np.random.default_rng(0)
    counter = StampGapCounter()
    stamps = [k * period + int(rng.integers(-2_000_000, 2_000_000)) for k in range(40)]
    del stamps[20:23]  # three frames lost in transport
    del stamps[30]  # and one more
    found = [counter.add(s) for s in stamps]
    assert counter.missing == 4 and sorted(found)[-2:] == [1, 3]
    # jitter is never taken for loss, and nothing counts before the period is known
    quiet = StampGapCounter()
    assert sum(quiet.add(s) for s in [0, 1_000, 90_000_000, 91_000_000]) == 0
    # a clock jump back restarts the estimate instead of counting a huge gap
    counter.add(5 * period)
    assert counter.add(6 * period) == 0 and counter.missing == 4
