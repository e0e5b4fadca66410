"""numpy <-> sensor_msgs/Image, built on the ROS-free `image_codec`."""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from fusion_perception.image_codec import decode_msg, encode


def image_to_msg(image: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """Build an Image; raises ImageEncodingError naming the field when `image` does not fit `encoding`."""
    data, step = encode(image, encoding)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = step
    msg.data = data
    return msg


def msg_to_image(msg: Image) -> np.ndarray:
    """Zero-copy view of the pixels (see `image_codec.decode`)."""
    return decode_msg(msg)
