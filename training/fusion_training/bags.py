"""Reading rosbag2 recordings (sqlite3 or mcap): open a bag, check its two camera topics, and
replay their messages in recording order through a pairing engine, as the node receives them."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from fusion_perception.pairing import Pair, PairingEngine, header_stamp_ns

IMAGE_MSG = "sensor_msgs/msg/Image"
COMPRESSED_MSG = "sensor_msgs/msg/CompressedImage"
RGB_TYPES = (IMAGE_MSG, COMPRESSED_MSG)
THERMAL_TYPES = (IMAGE_MSG, COMPRESSED_MSG)  # compressed: 16-bit PNG
# sensor_msgs/Image and CompressedImage are identical in Humble, Jazzy and Kilted; this store
# is only used for bags that carry no message definitions of their own.
_TYPESTORE = get_typestore(Stores.ROS2_KILTED)


class BagError(ValueError):
    """A bag that cannot be converted: unreadable, missing topic, wrong type or encoding."""


class StorageDamageError(BagError):
    """Raised by ``replay_pairs`` when the bag's storage becomes unreadable part-way."""


def bag_name(path: Path) -> str:
    """A file-name-safe name for a bag (its folder or file stem)."""
    name = path.name if path.is_dir() else path.stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "bag"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class BagSource:
    """One opened bag and the two connections' types."""

    path: Path
    name: str
    reader: AnyReader
    rgb_type: str
    thermal_type: str
    counts: dict[str, int]

    def close(self) -> None:
        self.reader.close()


def open_bag(path: str | Path, rgb_topic: str, thermal_topic: str) -> BagSource:
    """Open a rosbag2 folder (sqlite3 or mcap) or a single .mcap/.db3 file and check that both
    topics exist with a supported type. Raises BagError naming the bag and the problem."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: bag not found")
    reader = AnyReader([path], default_typestore=_TYPESTORE)
    try:
        reader.open()
    except (AnyReaderError, OSError, ValueError) as exc:
        raise BagError(f"{path}: cannot read bag (truncated or corrupted?): {exc}") from None
    try:
        topics = reader.topics
        available = ", ".join(f"{t} [{i.msgtype}]" for t, i in sorted(topics.items()))
        types = {}
        for role, topic, allowed in (
            ("rgb", rgb_topic, RGB_TYPES),
            ("thermal", thermal_topic, THERMAL_TYPES),
        ):
            if topic not in topics:
                raise BagError(
                    f"{path}: --{role}-topic {topic!r} is not in the bag; it has: "
                    f"{available or 'no topics'}"
                )
            msgtype = topics[topic].msgtype
            if msgtype not in allowed:
                raise BagError(
                    f"{path}: --{role}-topic {topic!r} has type {msgtype}; "
                    f"supported: {', '.join(allowed)}"
                )
            types[role] = msgtype
        counts = {"rgb": topics[rgb_topic].msgcount, "thermal": topics[thermal_topic].msgcount}
    except BaseException:
        reader.close()
        raise
    return BagSource(path, bag_name(path), reader, types["rgb"], types["thermal"], counts)


def replay_pairs(
    source: BagSource, rgb_topic: str, thermal_topic: str, engine: PairingEngine, progress: bool
) -> Iterator[Pair]:
    """Push every message of the two topics in log-time order; yield each pair as it forms.

    Pair items are (deserialized message, msgtype). Storage errors met while reading (a
    corrupted page, a truncated chunk) become BagError naming the bag.
    """
    reader = source.reader
    connections = [c for c in reader.connections if c.topic in (rgb_topic, thermal_topic)]
    messages = reader.messages(connections=connections)
    total = source.counts["rgb"] + source.counts["thermal"]
    with tqdm(total=total, desc=source.name, unit="msg", disable=not progress) as bar:
        index = 0
        while True:
            try:
                item = next(messages, None)
                if item is None:
                    return
                connection, log_ns, raw = item
                msg = reader.deserialize(raw, connection.msgtype)
            except Exception as exc:  # rosbags surfaces storage damage as many exception types
                raise StorageDamageError(
                    f"{source.path}: unreadable after message {index} "
                    f"(corrupted or truncated bag): {type(exc).__name__}: {exc}"
                ) from None
            index += 1
            bar.update()
            stream = "rgb" if connection.topic == rgb_topic else "thermal"
            engine.push(stream, header_stamp_ns(msg), (msg, connection.msgtype))
            pair = engine.take_newest_pair(now_ns=max(int(log_ns), 0))
            if pair is not None:
                yield pair
