"""Raw image buffers (the `sensor_msgs/Image` layout) <-> numpy, without ROS or cv_bridge.

cv_bridge rescales 16-bit thermal by 1/257 on colour conversion and its Python side breaks under numpy 2,
so the package decodes the message layout itself. Decoding works on anything with the Image fields
(rclpy messages, rosbags messages), so the node and the offline bag reader share one implementation.
"""

from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


class ImageEncodingError(ValueError):
    """An image buffer whose encoding, size or layout cannot be decoded as declared."""


@dataclass(frozen=True)
class Encoding:
    dtype: np.dtype
    channels: int


ENCODINGS: dict[str, Encoding] = {
    "mono8": Encoding(np.dtype(np.uint8), 1),
    "8UC1": Encoding(np.dtype(np.uint8), 1),
    "mono16": Encoding(np.dtype(np.uint16), 1),
    "16UC1": Encoding(np.dtype(np.uint16), 1),
    "bgr8": Encoding(np.dtype(np.uint8), 3),
    "rgb8": Encoding(np.dtype(np.uint8), 3),
    "bgra8": Encoding(np.dtype(np.uint8), 4),
    "rgba8": Encoding(np.dtype(np.uint8), 4),
    "32FC1": Encoding(np.dtype(np.float32), 1),
}


def lookup_encoding(encoding: str) -> Encoding:
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ImageEncodingError(
            f"encoding: unsupported value {encoding!r}; supported: {', '.join(ENCODINGS)}"
        ) from None


def decode(
    data: Any, height: int, width: int, encoding: str, step: int, is_bigendian: bool = False
) -> np.ndarray:
    """Return an HxW or HxWxC array in the encoding's own channel order.

    The result is a read-only zero-copy view of `data` when the buffer is little-endian (strided when
    rows are padded); copy it before keeping it beyond the message's lifetime.
    """
    enc = lookup_encoding(encoding)
    if height <= 0 or width <= 0:
        raise ImageEncodingError(f"height/width: empty image ({width}x{height})")
    row_bytes = width * enc.channels * enc.dtype.itemsize
    if step < row_bytes:
        raise ImageEncodingError(
            f"step: {step} is smaller than width*channels*bytes = {row_bytes} for {encoding}"
        )
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size != step * height:
        raise ImageEncodingError(
            f"data: length {buffer.size} != step*height = {step}*{height} = {step * height}"
        )
    rows = buffer.reshape(height, step)[:, :row_bytes]
    dtype = enc.dtype.newbyteorder(">" if is_bigendian else "<")
    if enc.dtype.itemsize > 1 and rows.strides[0] % enc.dtype.itemsize:
        rows = np.ascontiguousarray(rows)
    pixels = rows.view(dtype)
    if is_bigendian and enc.dtype.itemsize > 1:
        pixels = pixels.astype(enc.dtype)
    shape = (height, width) if enc.channels == 1 else (height, width, enc.channels)
    return pixels.reshape(shape)


def decode_compressed_rgb(data: Any, fmt: str = "") -> np.ndarray:
    """A CompressedImage payload (any format OpenCV reads: jpeg, png, ...) -> RGB uint8 HxWx3.

    Empty or undecodable data raises ImageEncodingError ("data: ...") instead of an OpenCV
    assertion.
    """
    import cv2  # only the compressed path needs OpenCV

    image = _imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR, fmt)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _imdecode(buffer: np.ndarray, flags: int, fmt: str) -> np.ndarray:
    """cv2.imdecode, with empty or undecodable data named instead of an OpenCV assertion."""
    import cv2

    if buffer.size == 0:
        raise ImageEncodingError(f"data: CompressedImage (format {fmt!r}) has no data (0 bytes)")
    image = cv2.imdecode(buffer, flags)
    if image is None:
        raise ImageEncodingError(
            f"data: CompressedImage (format {fmt!r}, {buffer.size} bytes) could not be decoded"
        )
    return image


# What compressed_image_transport's png writes for single-channel thermal, by declared encoding.
THERMAL_COMPRESSED = {"mono16": np.uint16, "16UC1": np.uint16, "mono8": np.uint8, "8UC1": np.uint8}
COMPRESSED_DEPTH_HEADER = 12  # compressedDepth prefixes the PNG with its config (format + 2 floats)


def decode_compressed_thermal(data: Any, fmt: str = "") -> tuple[np.ndarray, str]:
    """A thermal CompressedImage payload -> (HxW array, encoding).

    The format field is what image_transport writes, "<encoding>; png compressed" (or
    "<encoding>; compressedDepth png"): 16-bit PNG keeps the camera's counts exactly. Without an
    encoding in the format it follows the decoded depth. Colour, a depth that contradicts the
    declared encoding, or a lossy 8-bit codec claimed as 16-bit raise ImageEncodingError.
    """
    import cv2

    declared = fmt.split(";", 1)[0].strip() if ";" in fmt else ""
    if declared and declared not in THERMAL_COMPRESSED:
        raise ImageEncodingError(
            f"format: {fmt!r} declares encoding {declared!r}; compressed thermal must be one of "
            f"{', '.join(THERMAL_COMPRESSED)} (32FC1 cannot be compressed this way)"
        )
    buffer = np.frombuffer(data, dtype=np.uint8)
    if "compresseddepth" in fmt.lower():
        buffer = buffer[COMPRESSED_DEPTH_HEADER:]
    image = _imdecode(buffer, cv2.IMREAD_UNCHANGED, fmt)
    if image.ndim != 2:
        raise ImageEncodingError(
            f"data: thermal CompressedImage decodes to {image.shape[2]} channels; a thermal stream "
            "must be single-channel (e.g. mono16; png compressed)"
        )
    encoding = declared or ("mono16" if image.dtype == np.uint16 else "mono8")
    if image.dtype != THERMAL_COMPRESSED.get(encoding, image.dtype):
        raise ImageEncodingError(
            f"data: format {fmt!r} declares {encoding} but the payload decodes to "
            f"{image.dtype} (a lossy 8-bit codec cannot carry 16-bit counts: use png)"
        )
    return image, encoding


def decode_msg(msg: Any) -> np.ndarray:
    """`decode` applied to an Image-shaped message (rclpy or rosbags)."""
    return decode(msg.data, msg.height, msg.width, msg.encoding, msg.step, bool(msg.is_bigendian))


def encode(image: np.ndarray, encoding: str) -> tuple[array.array, int]:
    """Pack `image` for `msg.data`; returns (data, step).

    An `array.array('B')` is used because rclpy copies it in one call, whereas assigning a numpy array
    iterates element by element (55-120 ms for one 640x512 frame).
    """
    enc = lookup_encoding(encoding)
    expected_ndim = 2 if enc.channels == 1 else 3
    if image.ndim != expected_ndim or (enc.channels > 1 and image.shape[2] != enc.channels):
        raise ImageEncodingError(
            f"image: shape {image.shape} does not fit encoding {encoding} ({enc.channels} channel(s))"
        )
    if image.size == 0:
        raise ImageEncodingError(f"image: empty array of shape {image.shape}")
    if image.dtype != enc.dtype:
        raise ImageEncodingError(
            f"image: dtype {image.dtype} does not fit {encoding} ({enc.dtype})"
        )
    flat = np.ascontiguousarray(image, dtype=enc.dtype.newbyteorder("<")).reshape(-1).view(np.uint8)
    data = array.array("B")
    data.frombytes(flat)
    return data, image.shape[1] * enc.channels * enc.dtype.itemsize


_TO_RGB = {
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
}


def to_rgb8(image: np.ndarray, encoding: str) -> np.ndarray:
    """Convert a decoded colour or 8-bit grey image to RGB uint8 HxWx3 (a new array)."""
    if encoding == "rgb8":
        return image.copy()
    if encoding in _TO_RGB:  # OpenCV swaps channels ~50x faster than a reversed numpy copy
        return cv2.cvtColor(np.ascontiguousarray(image), _TO_RGB[encoding])
    if encoding in ("mono8", "8UC1"):
        return np.repeat(image[:, :, None], 3, axis=2)
    raise ImageEncodingError(
        f"encoding: {encoding!r} is not a colour or 8-bit grey encoding usable as the RGB camera"
    )
