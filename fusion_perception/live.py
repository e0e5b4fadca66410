"""The policies of a live camera pair, without ROS: what happens between the subscriptions and the
frame pipeline, and what the diagnostics say about it.

:class:`LiveInput` pairs the two streams (`fusion_perception.pairing`) and watches them: stamps
that jump back (a looping bag, a restarted simulator) restart pairing; stamps ahead of the host
clock, frames missing from a camera's stamp sequence and messages the middleware lost are
counted and reported; a silent camera can be replaced by the other one (``fallback``); when both
cameras are live but never pair, the measured stamp offset says which ``sync.*`` value to set.
:class:`ErrorLog` counts every problem by kind and throttles its log lines;
:class:`FrameStats` keeps the per-stage timings. The node feeds them messages and clocks and
publishes what they report; tests drive them with plain objects.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fusion_perception.pairing import (
    REJECT_BACKWARDS,
    STREAMS,
    Pair,
    PairingStats,
    StampGapCounter,
    SyncConfig,
    header_stamp_ns,
)

CLOCK_JUMP_NS = 1_000_000_000  # a stamp this far behind its stream's last one: the clock jumped
FUTURE_TOLERANCE_NS = 500_000_000  # a stamp this far ahead of the host clock is flagged
FUTURE_FLAG_S = 3.0  # how long a camera stays flagged after a future stamp
UNPAIRED_WARN_S = 3.0  # both cameras live but no pair for this long: diagnose the stamp offset
RECENT_STAMPS = 50  # per stream, for measuring the offset between the streams
LOG_EVERY_S = 2.0  # one log line per error kind at most this often
FALLBACKS = ("none", "rgb_only", "thermal_only")
# Which pair the worker takes when it frees: the newest at once, or (fresh) a newer one soon.
PAIR_POLICIES = ("fresh", "newest")


class ErrorLog:
    """Count problems by kind and log each kind at most every ``every_s``, so a bad stream cannot
    flood the log while a different problem still gets its own line at once."""

    def __init__(
        self,
        warn: Callable[[str], None],
        error: Callable[[str], None],
        every_s: float = LOG_EVERY_S,
    ) -> None:
        self.warn, self.error, self.every_s = warn, error, every_s
        self.counts: Counter[str] = Counter()
        self._last_logged: dict[str, float] = {}
        self._logged_count: dict[str, int] = {}
        self._lock = threading.Lock()  # the callbacks, the worker and the image thread report

    def report(self, kind: str, text: str, warning: bool = False) -> None:
        with self._lock:
            self.counts[kind] += 1
            now = time.monotonic()
            if now - self._last_logged.get(kind, -math.inf) < self.every_s:
                return
            self._last_logged[kind] = now
            suppressed = self.counts[kind] - self._logged_count.get(kind, 0) - 1
            self._logged_count[kind] = self.counts[kind]
        suffix = f" ({suppressed} similar since last report)" if suppressed > 0 else ""
        # rclpy ties one severity to each calling line, so each level has its own call.
        if warning:
            self.warn(text + suffix)
        else:
            self.error(text + suffix)


@dataclass
class _Camera:
    """What is known of one camera stream."""

    latest: tuple[float, Any] | None = None  # (monotonic arrival, message)
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=100))
    receive_delay_ms: deque[float] = field(default_factory=lambda: deque(maxlen=100))
    last_stamp: int | None = None  # newest accepted stamp
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_STAMPS))
    future: tuple[float, int] | None = None  # (monotonic, ns ahead) of the last future stamp
    arrived: dict[int, float] = field(default_factory=dict)  # recent stamp -> monotonic arrival
    lost: int = 0  # messages the middleware reported lost
    gaps: StampGapCounter = field(default_factory=StampGapCounter)


@dataclass
class CameraHealth:
    ok: bool
    text: str
    values: dict[str, str]


@dataclass
class LiveHealth:
    """What the diagnostics publish: the pipeline's values and verdict, one entry per camera."""

    ok: bool
    message: str
    values: dict[str, object]
    cameras: dict[str, CameraHealth]


class LiveInput:
    """Pairing of two live camera streams and the policies around it (see the module docstring).

    ``push`` is called from the subscription callbacks, ``next_pair`` from one worker thread and
    ``health`` from a timer; all three may run at once.
    """

    def __init__(
        self,
        sync: SyncConfig,
        errors: ErrorLog,
        camera_timeout: float,
        fallback: str = "none",
        pair_policy: str = "newest",
    ) -> None:
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback: {fallback!r} is not one of {list(FALLBACKS)}")
        if pair_policy not in PAIR_POLICIES:
            raise ValueError(f"pair_policy: {pair_policy!r} is not one of {list(PAIR_POLICIES)}")
        self.sync, self.errors = sync, errors
        self.camera_timeout, self.fallback = camera_timeout, fallback
        self.pair_policy = pair_policy
        self.fresh_waits = 0  # pairs left for a newer one (pair_policy fresh)
        self._waiting: tuple[tuple[int, int], float, float] | None = None  # stamps, since, T
        self.pairing = sync.engine()
        self.cameras = {s: _Camera() for s in STREAMS}
        self.rgb_frame_id: str | None = None  # the frame the outputs' pixels are in
        self.last_processed_stamp = 0
        self._lock = threading.Lock()
        self._clock_jumped = threading.Event()  # set by push, taken by the worker
        self._pairs_seen = 0
        self._pairing_since = time.monotonic()  # since when no pair formed (both cameras live)
        self._unpaired_logged = False

    def reset(self) -> None:
        """Forget the streams (the node stopped listening): no pairs, no fallback frames."""
        with self._lock:
            for camera in self.cameras.values():
                camera.latest = None
        self.pairing.reset()
        self._waiting = None
        self._pairing_since = time.monotonic()

    # -- callback side
    def push(self, stream: str, msg: Any, clock_ns: int) -> None:
        """One camera message (anything with a ROS ``header``); ``clock_ns`` is the host's
        (ROS) clock now."""
        now = time.monotonic()
        stamp_ns, frame_id = header_stamp_ns(msg), msg.header.frame_id
        camera = self.cameras[stream]
        if stream == "rgb":
            self.rgb_frame_id = frame_id
        with self._lock:  # before the pairing engine can wake the worker with this message
            camera.arrivals.append(now)
            camera.arrived[stamp_ns] = now
            while len(camera.arrived) > 2 * self.pairing.queue_size:
                del camera.arrived[next(iter(camera.arrived))]  # the oldest
            camera.latest = (now, msg)
        # Transport delay as seen here (wall clock minus stamp): shows DDS cost and clock skew.
        camera.receive_delay_ms.append((time.time_ns() - stamp_ns) / 1e6)
        ahead = stamp_ns - clock_ns
        if ahead > FUTURE_TOLERANCE_NS:
            camera.future = (now, ahead)
            self.errors.report(
                f"{stream}_stamp_future",
                f"{stream} stamp is {ahead / 1e9:.2f} s ahead of this node's clock (frame_id "
                f"'{frame_id}'): the camera's clock is not synchronised with this host "
                "(or use_sim_time differs between the nodes)",
                warning=True,
            )
        result = self.pairing.push(stream, stamp_ns, msg)
        previous = camera.last_stamp
        if (
            result.reason == REJECT_BACKWARDS
            and previous is not None
            and previous - stamp_ns > CLOCK_JUMP_NS
        ):
            # A bag that loops or a simulator that restarts: without a restart of pairing every
            # later message would be "backwards" for good.
            self.errors.report(
                f"{stream}_clock_jump",
                f"{stream} clock jumped back {(previous - stamp_ns) / 1e9:.2f} s "
                f"({REJECT_BACKWARDS}, frame_id '{frame_id}'): pairing restarted",
            )
            self._restart_timeline()
            result = self.pairing.push(stream, stamp_ns, msg)
        if not result.accepted:
            self.errors.report(
                f"{stream}_{result.reason}",
                f"{stream} message rejected: {result.reason} "
                f"(stamp {stamp_ns} ns, frame_id '{frame_id}')",
            )
            return
        camera.last_stamp = stamp_ns
        camera.recent.append(stamp_ns)
        missed = camera.gaps.add(stamp_ns)
        if missed:
            self.errors.report(
                f"{stream}_frames_missing",
                f"{stream}: {missed} frame(s) missing before stamp {stamp_ns} ns (lost in "
                f"transport or by the camera; {camera.gaps.missing} so far)",
                warning=True,
            )

    def _restart_timeline(self) -> None:
        self.pairing.reset()
        self._clock_jumped.set()  # tracks of the old timeline would match by accident
        for camera in self.cameras.values():
            camera.last_stamp = None
            camera.gaps.last = None  # the new timeline starts afresh
            camera.recent.clear()
        self.last_processed_stamp = 0

    def lost(self, stream: str, count: int, topic: str) -> None:
        """The middleware reported ``count`` messages of ``stream`` lost."""
        camera = self.cameras[stream]
        camera.lost += count
        self.errors.report(
            f"{stream}_messages_lost",
            f"{stream}: the middleware lost {count} message(s) on {topic} ({camera.lost} so far; "
            "large images over best effort: raise the socket buffers or use reliable QoS)",
            warning=True,
        )

    # -- worker side
    def wait_for_data(self, timeout_s: float) -> bool:
        """Block the worker until a new message, at most ``timeout_s`` (less while the fresh
        policy waits: until its wait ends)."""
        if self._waiting is not None:
            _, since, period_s = self._waiting
            timeout_s = max(0.0, min(timeout_s, since + period_s - time.monotonic()))
        return self.pairing.wait_for_data(timeout_s)

    def next_pair(self, clock_ns: int) -> Pair | None:
        """The newest matched pair, else (with ``fallback``) the silent camera's partner alone;
        None also while the fresh policy waits for a newer pair."""
        if self.pair_policy == "fresh" and self._wait_for_a_fresher_pair():
            return None
        self._waiting = None
        pair = self.pairing.take_newest_pair(clock_ns)
        return pair if pair is not None else self._fallback_pair()

    def _wait_for_a_fresher_pair(self) -> bool:
        """The fresh policy. The newest pair became complete ``e`` seconds ago and the next one
        is due about a camera period ``T`` (measured from the arrivals) after it: processing it
        now adds ``e`` to its latency, waiting costs ``T - e`` of idle worker for a pair that
        is new. So a pair older than ``T / 2`` waits, once per idle spell of the worker and for
        at most ``T``: then the newest pair is taken, whichever it is (a camera that stopped)."""
        stamps = self.pairing.peek_newest_pair()
        if stamps is None:
            return False
        now = time.monotonic()
        if self._waiting is not None:  # waiting already: a newer pair, or the time is up
            old_stamps, since, period_s = self._waiting
            return stamps == old_stamps and now - since < period_s
        with self._lock:  # copies: the callbacks append meanwhile
            steps = [np.diff(np.asarray(self.cameras[s].arrivals)) for s in STREAMS]
            arrived = [self.cameras[s].arrived.get(t) for s, t in zip(STREAMS, stamps, strict=True)]
        if min(step.size for step in steps) < 2:
            return False  # no camera period measured yet
        period_s = max(float(np.median(step)) for step in steps)  # the slower camera's rate
        if None in arrived or now - max(arrived) <= period_s / 2:
            return False  # fresh enough (or so old its arrival is forgotten: take it)
        self._waiting = (stamps, now, period_s)
        self.fresh_waits += 1
        return True

    def take_clock_jump(self) -> bool:
        """Whether the stamps jumped back since the last call (the tracker must restart)."""
        jumped = self._clock_jumped.is_set()
        self._clock_jumped.clear()
        return jumped

    def processed(self, pair: Pair) -> None:
        self.last_processed_stamp = max(pair.rgb_stamp_ns, pair.thermal_stamp_ns)

    def silent_streams(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            latest = {s: c.latest for s, c in self.cameras.items()}
        return [s for s in STREAMS if latest[s] is None or now - latest[s][0] > self.camera_timeout]

    def _fallback_pair(self) -> Pair | None:
        if self.fallback == "none":
            return None
        live = "rgb" if self.fallback == "rgb_only" else "thermal"
        silent = self.silent_streams()
        if live in silent or ("thermal" if live == "rgb" else "rgb") not in silent:
            return None
        with self._lock:
            entry = self.cameras[live].latest
        if entry is None:
            return None
        msg = entry[1]
        stamp = header_stamp_ns(msg)
        if stamp <= self.last_processed_stamp:
            return None
        return Pair(
            msg if live == "rgb" else None, msg if live == "thermal" else None, stamp, stamp, 0
        )

    # -- diagnosis
    def stream_offset(self, after_ns: int = 0) -> tuple[float, float, int] | None:
        """(median, max deviation, samples) in ns of thermal minus the nearest RGB stamp, both
        with their sync offsets applied: what is left for sync.slop to cover. Only thermal
        stamps later than ``after_ns`` count (e.g. those since the last processed pair)."""
        offsets = self.pairing.offsets_ns
        rgb = np.array(self.cameras["rgb"].recent, np.int64) + offsets["rgb"]
        raw = np.array(self.cameras["thermal"].recent, np.int64)
        thermal = raw[raw > after_ns] + offsets["thermal"]
        if rgb.size == 0 or thermal.size == 0:
            return None
        rgb.sort()
        k = np.searchsorted(rgb, thermal).clip(1, max(rgb.size - 1, 1))
        before, after = rgb[k - 1], rgb[np.minimum(k, rgb.size - 1)]
        nearest = np.where(np.abs(thermal - before) <= np.abs(thermal - after), before, after)
        d = (thermal - nearest).astype(np.float64)
        median = float(np.median(d))
        return median, float(np.abs(d - median).max()), int(d.size)

    def unpaired_advice(self, residual_ns: float, jitter_ns: float, samples: int) -> str | None:
        """What to set when the measured offset keeps the streams from pairing (else None)."""
        exact = self.sync.mode == "exact"
        slop_ns = 0 if exact else self.pairing.slop_ns
        if abs(residual_ns) - jitter_ns <= slop_ns and not (exact and residual_ns != 0):
            return None  # the stamps could pair: the cause is elsewhere
        side = "after" if residual_ns > 0 else "before"
        measured = (
            f"thermal stamps are {abs(residual_ns) / 1e6:.1f} ms {side} rgb (after the sync "
            f"offsets; median of {samples}, jitter {jitter_ns / 1e6:.1f} ms)"
        )
        thermal_offset = self.sync.thermal_offset - residual_ns / 1e9
        rgb_offset = self.sync.rgb_offset + residual_ns / 1e9
        if abs(thermal_offset) > 1.0 and abs(rgb_offset) > 1.0:
            return (
                f"{measured}: the cameras stamp with different clocks; stamp both from one "
                "clock (sync.*_offset is limited to +-1 s)"
            )
        offset = (
            f"sync.thermal_offset:={thermal_offset:.3f}"
            if abs(thermal_offset) <= 1.0
            else f"sync.rgb_offset:={rgb_offset:.3f}"
        )
        if exact:
            return f"{measured} and sync.mode is exact; set {offset} or sync.mode:=approximate"
        slop = (abs(residual_ns) + jitter_ns) / 1e9 + 0.001
        wider = f" (or sync.slop:={slop:.3f})" if slop <= 1.0 else ""
        return (
            f"{measured}, beyond sync.slop {self.pairing.slop_ns / 1e9:.3f} s; set {offset}{wider}"
        )

    def _pairing_health(self, pairs: int, silent: list[str]) -> str | None:
        """Warning text when both cameras are live but nothing paired for UNPAIRED_WARN_S."""
        now = time.monotonic()
        if pairs != self._pairs_seen or silent:
            self._pairs_seen, self._pairing_since = pairs, now
            self._unpaired_logged = False
            return None
        unpaired_s = now - self._pairing_since
        if unpaired_s < UNPAIRED_WARN_S:
            return None
        # Thermal frames since the last processed pair: the ones that found no partner.
        offset = self.stream_offset(after_ns=self.last_processed_stamp)
        advice = self.unpaired_advice(*offset) if offset is not None and offset[2] >= 3 else None
        if advice is None:
            return None
        text = f"rgb and thermal have not paired for {unpaired_s:.1f} s: {advice}"
        if not self._unpaired_logged:  # one line per episode; diagnostics repeat it
            self._unpaired_logged = True
            self.errors.warn(text)
        return text

    def health(self, clock_ns: int, topics: dict[str, str]) -> LiveHealth:
        """Rates, counters, offsets and the verdict (silent camera, never pairing, future
        stamps); ``topics`` names each stream's resolved topic."""
        stats: PairingStats = self.pairing.stats(clock_ns)
        silent = self.silent_streams()
        unpaired = self._pairing_health(stats.pairs + stats.stale_pairs, silent)
        values: dict[str, object] = {
            "pair_rate_hz": f"{stats.pair_rate_hz:.2f}",
            "stale_pairs": stats.stale_pairs,
            "pair_policy": self.pair_policy,
            "fresh_waits": self.fresh_waits,
        }
        cameras: dict[str, CameraHealth] = {}
        now = time.monotonic()
        for stream in STREAMS:
            camera, s = self.cameras[stream], stats.streams[stream]
            times = camera.arrivals
            rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
            values[f"{stream}_rate_hz"] = f"{rate:.2f}"
            values[f"{stream}_dropped"] = s.dropped
            values[f"{stream}_unmatched"] = s.unmatched
            values[f"{stream}_messages_lost"] = camera.lost
            values[f"{stream}_frames_missing"] = camera.gaps.missing
            if s.last_age_ns is not None:
                values[f"{stream}_last_message_age_ms"] = f"{s.last_age_ns / 1e6:.1f}"
            if camera.receive_delay_ms:
                delay = float(np.median(camera.receive_delay_ms))
                values[f"{stream}_receive_delay_ms"] = f"{delay:.2f}"
            topic = topics[stream]
            entry = {"topic": topic, "rate_hz": f"{rate:.2f}"}
            ok, text = True, "receiving"
            if stream in silent:
                ok, text = False, f"{stream} camera silent ({topic})"
            elif camera.future is not None and now - camera.future[0] < FUTURE_FLAG_S:
                ok = False
                text = (
                    f"{stream} stamps {camera.future[1] / 1e9:.2f} s in the future ({topic}): "
                    "camera clock not synchronised with this host"
                )
            if camera.future is not None:
                entry["stamp_ahead_s"] = f"{camera.future[1] / 1e9:.3f}"
            cameras[stream] = CameraHealth(ok, text, entry)
        offset = self.stream_offset()
        if offset is not None:
            values["thermal_minus_rgb_ms"] = f"{offset[0] / 1e6:.2f}"
        if unpaired is not None:
            values["unpaired_s"] = f"{now - self._pairing_since:.1f}"
        if stats.dt_abs_mean_ns is not None:
            values["pair_dt_mean_ms"] = f"{stats.dt_abs_mean_ns / 1e6:.2f}"
            values["pair_dt_p95_ms"] = f"{stats.dt_abs_p95_ns / 1e6:.2f}"
        ok, message = True, "running"
        if silent:
            ok = False
            message = f"camera silent for > {self.camera_timeout} s: {', '.join(silent)}"
            if self.fallback != "none":
                message += f" (fallback {self.fallback})"
        elif unpaired is not None:
            ok, message = False, unpaired
        return LiveHealth(ok, message, values, cameras)


class LatestSlot:
    """A one-item mailbox between two threads in which the newest item wins: ``put`` replaces
    an item not yet taken (and counts it in ``replaced``), ``take`` waits for one. The worker
    hands its images to the image publisher this way, so a slow image path skips frames
    instead of holding back the next pair or queueing stale pictures."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._item: Any = None
        self._closed = False
        self.replaced = 0

    def put(self, item: Any) -> None:
        if item is None:
            raise ValueError("LatestSlot: None is the closed marker, not an item")
        with self._cond:
            if self._item is not None:
                self.replaced += 1
            self._item = item
            self._cond.notify()

    def take(self, timeout_s: float | None = None) -> Any:
        """The item (removed), or None once closed or after ``timeout_s``."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout_s)
            item, self._item = self._item, None
            return None if self._closed else item

    def discard(self) -> None:
        """Drop an item not yet taken (not counted as replaced)."""
        with self._cond:
            self._item = None

    def close(self) -> None:
        """Wake the taker for good; an item not taken is dropped."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class FrameStats:
    """Per-stage timings and output age of the last 100 processed pairs; stages of other
    threads (the image publisher) are recorded with `record_stage`."""

    def __init__(self) -> None:
        self.stage_ms: dict[str, deque[float]] = {}
        self.ages_ms: deque[float] = deque(maxlen=100)
        self.processed = 0
        self._lock = threading.Lock()  # the worker, the image publisher and the timer

    def record(self, timings_ms: dict[str, float], age_ms: float) -> None:
        with self._lock:
            for stage, ms in timings_ms.items():
                self.stage_ms.setdefault(stage, deque(maxlen=100)).append(ms)
            self.ages_ms.append(age_ms)
            self.processed += 1

    def record_stage(self, stage: str, ms: float) -> None:
        with self._lock:
            self.stage_ms.setdefault(stage, deque(maxlen=100)).append(ms)

    def values(self) -> dict[str, str]:
        with self._lock:
            stages = {stage: list(ms) for stage, ms in self.stage_ms.items()}
            ages = list(self.ages_ms)
        values = {f"{stage}_ms": f"{float(np.mean(ms)):.2f}" for stage, ms in stages.items()}
        if ages:
            values["age_ms_mean"] = f"{float(np.mean(ages)):.2f}"
            values["age_ms_max"] = f"{max(ages):.2f}"
        return values
