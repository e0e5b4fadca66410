import re

import numpy as np
import pytest

from fusion_perception.image_codec import (
    ENCODINGS,
    ImageEncodingError,
    decode,
    decode_compressed_rgb,
    encode,
    lookup_encoding,
    to_rgb8,
)


def random_image(encoding: str, height: int = 7, width: int = 5, seed: int = 0) -> np.ndarray:
    enc = lookup_encoding(encoding)
    rng = np.random.default_rng(seed)
    shape = (height, width) if enc.channels == 1 else (height, width, enc.channels)
    if enc.dtype == np.float32:
        return rng.normal(30.0, 10.0, shape).astype(np.float32)
    return rng.integers(0, np.iinfo(enc.dtype).max, shape, endpoint=True).astype(enc.dtype)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_round_trip_every_encoding(encoding: str) -> None:
    image = random_image(encoding)
    data, step = encode(image, encoding)
    decoded = decode(data, image.shape[0], image.shape[1], encoding, step)
    assert decoded.dtype == image.dtype
    np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_padded_rows_are_ignored(encoding: str) -> None:
    image = random_image(encoding, seed=1)
    data, step = encode(image, encoding)
    padding = 6
    rows = np.frombuffer(data, np.uint8).reshape(image.shape[0], step)
    padded = np.concatenate([rows, np.full((image.shape[0], padding), 0xAB, np.uint8)], axis=1)
    decoded = decode(padded.tobytes(), image.shape[0], image.shape[1], encoding, step + padding)
    np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1", "32FC1"])
def test_big_endian_input(encoding: str) -> None:
    image = random_image(encoding, seed=2)
    big = image.astype(image.dtype.newbyteorder(">")).tobytes()
    step = image.shape[1] * image.dtype.itemsize
    decoded = decode(big, image.shape[0], image.shape[1], encoding, step, is_bigendian=True)
    assert decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, image)


def test_mono16_keeps_raw_counts() -> None:
    counts = np.array([[0, 1, 7000], [8191, 16383, 65535]], np.uint16)
    data, step = encode(counts, "mono16")
    assert step == 6
    np.testing.assert_array_equal(decode(data, 2, 3, "mono16", step), counts)


def test_colour_conversions_to_rgb() -> None:
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 0] = 10  # blue
    bgr[..., 2] = 200  # red
    rgb = to_rgb8(bgr, "bgr8")
    assert rgb[0, 0].tolist() == [200, 0, 10]
    bgra = np.concatenate([bgr, np.full((2, 2, 1), 255, np.uint8)], axis=2)
    assert to_rgb8(bgra, "bgra8")[1, 1].tolist() == [200, 0, 10]
    assert to_rgb8(np.full((2, 2), 9, np.uint8), "mono8").shape == (2, 2, 3)
    with pytest.raises(ImageEncodingError, match="16UC1"):
        to_rgb8(np.zeros((2, 2), np.uint16), "16UC1")


def test_unsupported_encoding_names_the_field() -> None:
    with pytest.raises(ImageEncodingError, match=r"encoding: unsupported value 'yuv422'"):
        decode(b"\0" * 8, 2, 2, "yuv422", 4)


def test_data_length_mismatch_names_values() -> None:
    with pytest.raises(ImageEncodingError, match=r"data: length 11 != step\*height = 6\*2 = 12"):
        decode(b"\0" * 11, 2, 3, "mono16", 6)


def test_step_too_small() -> None:
    with pytest.raises(ImageEncodingError, match="step: 4 is smaller"):
        decode(b"\0" * 8, 2, 3, "mono16", 4)


def test_empty_image_rejected() -> None:
    with pytest.raises(ImageEncodingError, match="empty image"):
        decode(b"", 0, 640, "mono8", 640)
    with pytest.raises(ImageEncodingError, match="empty array"):
        encode(np.zeros((0, 4), np.uint8), "mono8")


def test_compressed_rgb_decodes_and_names_empty_or_bad_data() -> None:
    import cv2

    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 0] = 200  # red in RGB order
    ok, png = cv2.imencode(".png", rgb[:, :, ::-1])
    assert ok
    np.testing.assert_array_equal(decode_compressed_rgb(png.tobytes(), "png"), rgb)
    with pytest.raises(ImageEncodingError, match=r"^data: .*'jpeg'.* has no data \(0 bytes\)"):
        decode_compressed_rgb(b"", "jpeg")
    with pytest.raises(ImageEncodingError, match=r"^data: .*5 bytes\) could not be decoded"):
        decode_compressed_rgb(b"\xff\xd8abc", "jpeg")


def test_encode_rejects_wrong_shape_and_dtype() -> None:
    with pytest.raises(ImageEncodingError, match="does not fit encoding bgr8"):
        encode(np.zeros((4, 4), np.uint8), "bgr8")
    with pytest.raises(ImageEncodingError, match="dtype float64"):
        encode(np.zeros((4, 4)), "32FC1")


def test_rclpy_message_round_trip() -> None:
    from fusion_perception.ros.image_conversions import image_to_msg, msg_to_image

    image = random_image("mono16", 512, 640, seed=3)
    msg = image_to_msg(image, "mono16")
    assert (msg.height, msg.width, msg.step) == (512, 640, 1280)
    np.testing.assert_array_equal(msg_to_image(msg), image)


def test_compressed_thermal_keeps_16_bit_counts_exactly():
    import cv2

    from fusion_perception.image_codec import decode_compressed_thermal

    counts = np.random.default_rng(0).integers(5000, 12000, (48, 64)).astype(np.uint16)
    png = cv2.imencode(".png", counts)[1].tobytes()
    image, encoding = decode_compressed_thermal(png, "mono16; png compressed ")
    assert encoding == "mono16" and image.dtype == np.uint16
    np.testing.assert_array_equal(image, counts)
    # no encoding in the format: the decoded depth decides; compressedDepth's 12-byte header
    assert decode_compressed_thermal(png, "png")[1] == "mono16"
    depth, _ = decode_compressed_thermal(bytes(12) + png, "16UC1; compressedDepth png")
    np.testing.assert_array_equal(depth, counts)
    eight = cv2.imencode(".png", (counts // 64).astype(np.uint8))[1].tobytes()
    assert decode_compressed_thermal(eight, "mono8; png compressed")[1] == "mono8"


@pytest.mark.parametrize(
    ("payload", "fmt", "message"),
    [
        ("jpeg8", "mono16; jpeg compressed", "declares mono16 but the payload decodes to uint8"),
        ("colour", "bgr8; png compressed", "declares encoding 'bgr8'"),
        ("colour", "png", "decodes to 3 channels"),
        ("png16", "32FC1; png compressed", "32FC1 cannot be compressed"),
        ("empty", "mono16; png compressed", "has no data (0 bytes)"),
        ("garbage", "mono16; png compressed", "could not be decoded"),
    ],
)
def test_compressed_thermal_that_cannot_be_thermal_is_named(payload, fmt, message):
    import cv2

    from fusion_perception.image_codec import ImageEncodingError, decode_compressed_thermal

    counts = np.full((16, 16), 7000, np.uint16)
    data = {
        "jpeg8": cv2.imencode(".jpg", (counts // 64).astype(np.uint8))[1].tobytes(),
        "colour": cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))[1].tobytes(),
        "png16": cv2.imencode(".png", counts)[1].tobytes(),
        "empty": b"",
        "garbage": b"not an image at all",
    }[payload]
    with pytest.raises(ImageEncodingError, match=re.escape(message)):
        decode_compressed_thermal(data, fmt)
