"""Pairing of the RGB and thermal streams by stamp (ROS-free, thread-safe, deterministic).

Shaped for a ROS node whose subscription callbacks only ``push`` messages and whose single
worker thread calls ``take_newest_pair``: pushes are O(1) under a short lock, the worker always
gets the newest matched pair, and everything it skips is counted, never queued, so latency stays
bounded when inference is slower than the cameras. Unlike message_filters, unmatched and dropped
messages are visible in ``stats()``.

Stamps are integer nanoseconds (``header.stamp`` as ``sec * 10**9 + nanosec``). Time is only
ever read from arguments (``now_ns``), so replaying the same stamps gives the same pairs.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from fusion_perception.settings import check_fields, setting

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "DEFAULT_SLOP_NS",
    "MODES",
    "REJECT_BACKWARDS",
    "REJECT_REASONS",
    "REJECT_REPEATED",
    "REJECT_ZERO",
    "STREAMS",
    "Pair",
    "PairingEngine",
    "PairingStats",
    "PushResult",
    "StreamStats",
    "SyncConfig",
    "header_stamp_ns",
]

STREAMS = ("rgb", "thermal")
MODES = ("approximate", "exact")

# Half a frame period at 25 Hz: wide enough for free-running 25-60 Hz cameras with jitter.
DEFAULT_SLOP_NS = 20_000_000
# A third of a second of a 30 Hz camera: room for a partner that arrives late over DDS. It adds
# no latency: the worker always takes the newest pair.
DEFAULT_QUEUE_SIZE = 10
DEFAULT_STATS_WINDOW = 300

REJECT_BACKWARDS = "stamp_backwards"  # older than the stream's previous message
REJECT_REPEATED = "stamp_repeated"  # same stamp as the stream's previous message
REJECT_ZERO = "stamp_zero"  # unset header stamp (driver did not fill it)
REJECT_REASONS = (REJECT_BACKWARDS, REJECT_REPEATED, REJECT_ZERO)


def header_stamp_ns(msg: Any) -> int:
    """A ROS message's ``header.stamp`` (rclpy or rosbags) in integer nanoseconds."""
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


@dataclass(frozen=True)
class PushResult:
    """Outcome of one ``push``: whether it was buffered, why not, and how many old messages of
    the same stream it pushed out of the full buffer (0 or 1)."""

    accepted: bool
    reason: str | None = None
    evicted: int = 0


@dataclass(frozen=True)
class Pair:
    """A matched RGB + thermal pair. Stamps are the original ones (without offsets);
    ``dt_ns`` = (thermal + its offset) - (rgb + its offset), the residual after correction."""

    rgb: Any
    thermal: Any
    rgb_stamp_ns: int
    thermal_stamp_ns: int
    dt_ns: int

    @property
    def stamp_ns(self) -> int:
        """The pair's reference stamp: the RGB stamp, i.e. the header outputs carry."""
        return self.rgb_stamp_ns


@dataclass(frozen=True)
class StreamStats:
    """Counters of one stream since construction. Every accepted message ends up in exactly one
    of paired / evicted / skipped / stale / buffered, so
    ``received == paired + evicted + skipped + stale + buffered + sum(rejected.values())``."""

    received: int  # push() calls
    paired: int  # delivered in a Pair
    evicted: int  # pushed out of a full buffer by a newer message
    skipped: int  # discarded because a newer pair was taken (or with a stale one)
    stale: int  # part of a matched pair older than max_age_ns
    buffered: int  # waiting now
    rejected: dict[str, int]  # by reason (REJECT_REASONS)
    last_stamp_ns: int | None  # newest accepted stamp
    last_age_ns: int | None  # now_ns - last_stamp_ns

    @property
    def dropped(self) -> int:
        return self.evicted + self.skipped

    @property
    def unmatched(self) -> int:
        """Accepted messages that left without being delivered in a pair."""
        return self.evicted + self.skipped + self.stale


@dataclass(frozen=True)
class PairingStats:
    """Sync health. ``pair_rate_hz`` is over the take times (now_ns) of the last window of
    delivered pairs; |dt| statistics over their residuals (None before the first pair)."""

    pairs: int
    stale_pairs: int
    pair_rate_hz: float
    dt_abs_mean_ns: float | None
    dt_abs_p95_ns: float | None
    streams: dict[str, StreamStats]


class _Entry(NamedTuple):
    match_ns: int  # stamp + stream offset: the time base used for matching
    stamp_ns: int
    item: Any


class _Counters:
    def __init__(self) -> None:
        self.received = 0
        self.paired = 0
        self.evicted = 0
        self.skipped = 0
        self.stale = 0
        self.rejected = dict.fromkeys(REJECT_REASONS, 0)
        self.last_stamp_ns: int | None = None


def _check_int(value: Any, name: str, minimum: int | None) -> int:
    """``value`` as an int; raises naming ``name`` unless it is an integer >= ``minimum``."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int (nanoseconds/count), got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class SyncConfig:
    """How the two streams are paired, in seconds: the node's ``sync.<field>`` parameters and
    the bag tool's flags. ``max_age`` None turns the staleness check off (offline, where the
    recorder's log time may come from another clock than the cameras' stamps)."""

    mode: str = setting(
        "approximate",
        "pairing: approximate (within sync.slop) or exact (equal stamps, triggered rigs)",
        choices=MODES,
        flag="sync-mode",
    )
    slop: float = setting(
        DEFAULT_SLOP_NS / 1e9, "max |stamp difference| of a pair, seconds", low=0.0, high=1.0
    )
    rgb_offset: float = setting(0.0, "added to RGB stamps before pairing, s", low=-1.0, high=1.0)
    thermal_offset: float = setting(0.0, "added to thermal stamps, s", low=-1.0, high=1.0)
    max_age: float | None = setting(
        0.5, "pairs older than this (s) are skipped", low=0.0, high=10.0
    )
    queue_size: int = setting(
        DEFAULT_QUEUE_SIZE, "messages kept per stream for pairing", low=1, high=100
    )

    def __post_init__(self) -> None:
        check_fields(self, "sync")
        if not isinstance(self.queue_size, int) or isinstance(self.queue_size, bool):
            raise ValueError(f"sync.queue_size: must be an int, got {self.queue_size!r}")

    def engine(self) -> PairingEngine:
        """A fresh PairingEngine with these settings."""
        return PairingEngine(
            mode=self.mode,
            slop_ns=round(self.slop * 1e9),
            offsets_ns={
                "rgb": round(self.rgb_offset * 1e9),
                "thermal": round(self.thermal_offset * 1e9),
            },
            queue_size=self.queue_size,
            max_age_ns=None if self.max_age is None else round(self.max_age * 1e9),
        )


class PairingEngine:
    """Approximate- or exact-time pairing of the ``"rgb"`` and ``"thermal"`` streams.

    Args:
        mode: ``"approximate"`` pairs stamps within ``slop_ns`` (inclusive); ``"exact"`` only
            equal stamps (hardware-triggered rigs). Offsets apply in both modes.
        slop_ns: largest |dt| of a pair, after offsets (ignored in exact mode).
        offsets_ns: per-stream constant added to that stream's stamps before matching, e.g.
            ``{"thermal": -45_000_000}`` for a driver that stamps thermal 45 ms late.
        queue_size: per-stream buffer bound; a push into a full buffer evicts its oldest entry.
        max_age_ns: a matched pair whose RGB stamp is older than this at ``now_ns`` is stale:
            discarded and counted. None disables the check.
        stats_window: how many recent pairs the rate and |dt| statistics cover.
    """

    def __init__(
        self,
        *,
        mode: str = "approximate",
        slop_ns: int = DEFAULT_SLOP_NS,
        offsets_ns: Mapping[str, int] | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_age_ns: int | None = None,
        stats_window: int = DEFAULT_STATS_WINDOW,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        self.mode = mode
        self.slop_ns = _check_int(slop_ns, "slop_ns", 0)
        offsets = dict(offsets_ns or {})
        unknown = sorted(set(offsets) - set(STREAMS))
        if unknown:
            raise ValueError(f"offsets_ns has unknown stream(s) {unknown}; streams: {STREAMS}")
        self.offsets_ns = {
            s: _check_int(offsets.get(s, 0), f"offsets_ns[{s!r}]", None) for s in STREAMS
        }
        self.queue_size = _check_int(queue_size, "queue_size", 1)
        self.max_age_ns = None if max_age_ns is None else _check_int(max_age_ns, "max_age_ns", 0)
        window = _check_int(stats_window, "stats_window", 1)

        self._cond = threading.Condition(threading.Lock())
        self._buffers: dict[str, deque[_Entry]] = {s: deque() for s in STREAMS}
        self._counters = {s: _Counters() for s in STREAMS}
        self._pairs = 0
        self._stale_pairs = 0
        self._dt_abs: deque[int] = deque(maxlen=window)
        self._take_times: deque[int] = deque(maxlen=window)
        self._new_data = False

    def push(self, stream: str, stamp_ns: int, item: Any) -> PushResult:
        """Store one message (callback side). Never blocks on pairing work."""
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {list(STREAMS)}, got {stream!r}")
        stamp = _check_int(stamp_ns, "stamp_ns", 0)
        with self._cond:
            counters = self._counters[stream]
            counters.received += 1
            reason = None
            if stamp == 0:
                reason = REJECT_ZERO
            elif counters.last_stamp_ns is not None and stamp < counters.last_stamp_ns:
                reason = REJECT_BACKWARDS
            elif stamp == counters.last_stamp_ns:
                reason = REJECT_REPEATED
            if reason is not None:
                counters.rejected[reason] += 1
                return PushResult(accepted=False, reason=reason)
            counters.last_stamp_ns = stamp
            buffer = self._buffers[stream]
            evicted = 0
            if len(buffer) >= self.queue_size:
                buffer.popleft()
                counters.evicted += 1
                evicted = 1
            buffer.append(_Entry(stamp + self.offsets_ns[stream], stamp, item))
            self._new_data = True
            self._cond.notify_all()
            return PushResult(accepted=True, evicted=evicted)

    def wait_for_data(self, timeout_s: float) -> bool:
        """Block the worker until a message was accepted since its last take (True) or
        ``timeout_s`` seconds passed (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._new_data, timeout=timeout_s)

    def peek_newest_pair(self) -> tuple[int, int] | None:
        """Stamps (rgb, thermal) of the pair `take_newest_pair` would return, left in place.
        Counts as the worker's look at the data, like a take: `wait_for_data` then waits for a
        message that arrives after it."""
        with self._cond:
            self._new_data = False
            match = self._newest_match()
            if match is None:
                return None
            rgb, thermal = self._buffers["rgb"][match[0]], self._buffers["thermal"][match[1]]
            return rgb.stamp_ns, thermal.stamp_ns

    def take_newest_pair(self, now_ns: int) -> Pair | None:
        """Remove and return the newest matched pair, or None (none matched, or it was stale).

        "Newest" = the pair whose older member is newest, ties broken by the smaller |dt|.
        Everything older than the taken pair on either stream is discarded as skipped.
        """
        now = _check_int(now_ns, "now_ns", 0)
        with self._cond:
            self._new_data = False
            match = self._newest_match()
            if match is None:
                return None
            rgb = self._remove_through("rgb", match[0])
            thermal = self._remove_through("thermal", match[1])
            if self.max_age_ns is not None and now - rgb.stamp_ns > self.max_age_ns:
                self._stale_pairs += 1
                for stream in STREAMS:
                    self._counters[stream].stale += 1
                return None
            dt = thermal.match_ns - rgb.match_ns
            self._pairs += 1
            for stream in STREAMS:
                self._counters[stream].paired += 1
            self._dt_abs.append(abs(dt))
            self._take_times.append(now)
            return Pair(rgb.item, thermal.item, rgb.stamp_ns, thermal.stamp_ns, dt)

    def _newest_match(self) -> tuple[int, int] | None:
        """Buffer indices (rgb, thermal) of the newest pair within slop, or None."""
        rgb, thermal = self._buffers["rgb"], self._buffers["thermal"]
        if not rgb or not thermal:
            return None
        slop = 0 if self.mode == "exact" else self.slop_ns
        t_stamps = [e.match_ns for e in thermal]  # ascending: stamps only increase per stream
        best: tuple[int, int] | None = None
        best_key: tuple[int, int] | None = None
        for i, entry in enumerate(rgb):
            t = entry.match_ns
            # For a given RGB stamp t, the closest thermal at or after t beats any before t
            # (its older member is t itself); otherwise take the latest one before t.
            k = bisect_left(t_stamps, t)
            if k < len(t_stamps) and t_stamps[k] - t <= slop:
                j = k
            elif k > 0 and t - t_stamps[k - 1] <= slop:
                j = k - 1
            else:
                continue
            key = (min(t, t_stamps[j]), -abs(t - t_stamps[j]))
            if best_key is None or key > best_key:
                best, best_key = (i, j), key
        return best

    def _remove_through(self, stream: str, index: int) -> _Entry:
        """Pop entries [0, index] of a buffer; the ones before ``index`` count as skipped."""
        buffer = self._buffers[stream]
        for _ in range(index):
            buffer.popleft()
        self._counters[stream].skipped += index
        return buffer.popleft()

    def reset(self) -> None:
        """Empty the buffers (counted as skipped) and forget the last stamps, e.g. after a
        clock jump or bag loop; counters and statistics are kept."""
        with self._cond:
            for stream in STREAMS:
                self._counters[stream].skipped += len(self._buffers[stream])
                self._buffers[stream].clear()
                self._counters[stream].last_stamp_ns = None
            self._new_data = False

    def stats(self, now_ns: int) -> PairingStats:
        """Snapshot of the counters and sync statistics at ``now_ns``."""
        now = _check_int(now_ns, "now_ns", 0)
        with self._cond:
            streams = {}
            for stream in STREAMS:
                c = self._counters[stream]
                streams[stream] = StreamStats(
                    received=c.received,
                    paired=c.paired,
                    evicted=c.evicted,
                    skipped=c.skipped,
                    stale=c.stale,
                    buffered=len(self._buffers[stream]),
                    rejected=dict(c.rejected),
                    last_stamp_ns=c.last_stamp_ns,
                    last_age_ns=None if c.last_stamp_ns is None else now - c.last_stamp_ns,
                )
            dts = np.array(self._dt_abs, dtype=np.float64)
            times = list(self._take_times)
            pairs, stale_pairs = self._pairs, self._stale_pairs
        span = times[-1] - times[0] if len(times) >= 2 else 0
        return PairingStats(
            pairs=pairs,
            stale_pairs=stale_pairs,
            pair_rate_hz=(len(times) - 1) * 1e9 / span if span > 0 else 0.0,
            dt_abs_mean_ns=float(dts.mean()) if dts.size else None,
            dt_abs_p95_ns=float(np.percentile(dts, 95)) if dts.size else None,
            streams=streams,
        )


class StampGapCounter:
    """Frames missing from one camera's stamp sequence: messages lost before they reached us.

    The camera's period is the median of its recent stamp steps; a step longer than
    ``tolerance`` periods counts ``round(step / period) - 1`` missing frames. Needs ``warmup``
    steps first, so a camera's start-up jitter is not taken for loss; steps backwards (a
    clock jump) restart it."""

    def __init__(self, window: int = 50, warmup: int = 10, tolerance: float = 1.5) -> None:
        self.steps: deque[int] = deque(maxlen=window)
        self.warmup, self.tolerance = warmup, tolerance
        self.last: int | None = None
        self.missing = 0

    def add(self, stamp_ns: int) -> int:
        """Record the next accepted stamp; returns the frames missing just before it."""
        previous, self.last = self.last, stamp_ns
        if previous is None or stamp_ns <= previous:
            if previous is not None:
                self.steps.clear()
            return 0
        step = stamp_ns - previous
        missed = 0
        if len(self.steps) >= self.warmup:
            period = float(np.median(self.steps))
            if step > self.tolerance * period:
                missed = max(round(step / period) - 1, 0)
                self.missing += missed
                return missed  # a gap is not a period sample
        self.steps.append(step)
        return missed
