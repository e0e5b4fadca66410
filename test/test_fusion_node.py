"""fusion_node as a real process over loopback DDS: outputs, diagnostics, bad input, back-pressure."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
import time

import numpy as np
import pytest
from node_harness import HEIGHT, WIDTH, Harness, vifb_pair
from ros_process import running

pytestmark = pytest.mark.ros


def node_args(checkpoint, *params: str) -> list[str]:
    base = [
        f"checkpoint:={checkpoint}",
        "score_threshold:=0.0",
        "max_detections:=20",
        "camera_timeout:=0.5",
        "diagnostics_period:=0.3",
    ]
    ros_args = [a for p in [*base, *params] for a in ("-p", p)]
    return ["-m", "fusion_perception.ros.fusion_node", "--ros-args", *ros_args]


def statuses(harness: Harness) -> dict[str, object]:
    """The newest status of each name published by fusion_node."""
    latest = {}
    for array in harness.diagnostics:
        for status in array.status:
            if status.name.startswith("fusion_node"):
                latest[status.name] = status
    return latest


def processed(harness: Harness) -> int:
    status = statuses(harness).get("fusion_node: pipeline")
    values = {kv.key: kv.value for kv in status.values} if status else {}
    return int(values.get("processed_pairs", 0))


def test_pairs_in_detections_and_fused_image_out(ros_context, tmp_path, node_checkpoint, vifb_dir):
    bgr, thermal = vifb_pair(vifb_dir)
    harness = Harness(ros_context)
    with running(node_args(node_checkpoint), tmp_path / "node.log") as proc:
        harness.wait_for_node(bgr, thermal)
        sent = {}
        for _ in range(5):
            rgb = harness.publish_pair(bgr, thermal)
            sent[(rgb.header.stamp.sec, rgb.header.stamp.nanosec)] = rgb.header
            wanted = len(sent)
            harness.spin_until(lambda n=wanted: len(harness.detections) >= n, 10)
        harness.spin_until(
            lambda: (
                harness.fused
                and harness.label_info
                and processed(harness) >= len(harness.detections) >= 3
            ),
            10,
        )
        assert proc.poll() is None, (tmp_path / "node.log").read_text()
    harness.close()

    assert harness.detections, (tmp_path / "node.log").read_text()
    (label_info,) = harness.label_info[:1]
    class_ids = {str(c.class_id) for c in label_info.class_map}
    assert [c.class_name for c in label_info.class_map] == ["person", "car"]
    total = 0
    for _, det in harness.detections:
        key = (det.header.stamp.sec, det.header.stamp.nanosec)
        assert key in sent, "detections must carry the RGB stamp"
        assert det.header.frame_id == "rgb_optical"
        for d in det.detections:
            total += 1
            assert d.header == det.header
            assert 0 <= d.bbox.center.position.x <= WIDTH
            assert 0 <= d.bbox.center.position.y <= HEIGHT
            assert d.bbox.size_x > 0 and d.bbox.size_y > 0
            hyp = d.results[0]
            assert hyp.hypothesis.class_id in class_ids
            assert 0.0 <= hyp.hypothesis.score <= 1.0
            assert hyp.pose.pose.position.x == d.bbox.center.position.x
    assert total > 0, "score_threshold 0 must yield boxes"
    fused = harness.fused[-1]
    assert (fused.width, fused.height, fused.encoding) == (WIDTH, HEIGHT, "bgr8")
    assert (fused.header.stamp.sec, fused.header.stamp.nanosec) in sent
    assert fused.header.frame_id == "rgb_optical"
    pipeline = statuses(harness)["fusion_node: pipeline"]
    values = {kv.key: kv.value for kv in pipeline.values}
    assert int(values["processed_pairs"]) >= len(harness.detections) >= 3
    assert float(values["forward_ms"]) > 0
    assert "age_ms_mean" in values and values["device"] == "cpu"
    # the default pairing policy and the image thread's counter are reported
    assert values["pair_policy"] == "fresh" and int(values["images_skipped"]) >= 0


def test_class_filter_and_tracking_ids_over_dds(ros_context, tmp_path, node_checkpoint, vifb_dir):
    bgr, thermal = vifb_pair(vifb_dir)
    harness = Harness(ros_context)
    params = ("classes:=person", "tracking.enabled:=true", "tracking.high_score:=0.0")
    with running(node_args(node_checkpoint, *params), tmp_path / "node.log") as proc:
        harness.wait_for_node(bgr, thermal)
        start = len(harness.detections)
        for _ in range(4):  # the same scene: the same objects, frame after frame
            before = len(harness.detections)
            harness.publish_pair(bgr, thermal)
            harness.spin_until(lambda b=before: len(harness.detections) > b, 10)
        assert proc.poll() is None, (tmp_path / "node.log").read_text()
    harness.close()
    frames = [det for _, det in harness.detections[start:]]
    assert len(frames) == 4 and all(f.detections for f in frames)
    for frame in frames:
        assert {d.results[0].hypothesis.class_id for d in frame.detections} == {"0"}  # person
    # the warm-up pairs confirmed the tracks: every box has an id, the same ids in every frame
    ids = [sorted(d.id for d in frame.detections) for frame in frames]
    assert all(ids[0]) and ids[0] == ids[-1]
    assert len(set(ids[0])) == len(ids[0])  # one id per object


def test_fused_camera_info_follows_each_fused_image(
    ros_context, tmp_path, node_checkpoint, vifb_dir
):
    from sensor_msgs.msg import CameraInfo

    bgr, thermal = vifb_pair(vifb_dir)
    harness = Harness(ros_context)
    pub_info = harness.node.create_publisher(CameraInfo, "rgb/camera_info", 5)
    infos: list[CameraInfo] = []
    harness.node.create_subscription(CameraInfo, "fusion_node/fused/camera_info", infos.append, 10)
    info = CameraInfo(width=WIDTH, height=HEIGHT, distortion_model="plumb_bob")
    info.header.frame_id = "rgb_optical"
    info.k = [500.0, 0.0, 320.0, 0.0, 500.0, 256.0, 0.0, 0.0, 1.0]
    with running(node_args(node_checkpoint), tmp_path / "node.log") as proc:
        harness.wait_for_node(bgr, thermal)
        for _ in range(3):
            pub_info.publish(info)
            harness.spin_until(lambda: False, 0.2)
        for _ in range(3):
            before = len(infos)
            harness.publish_pair(bgr, thermal)
            harness.spin_until(lambda b=before: len(infos) > b, 10)
        wrong = CameraInfo(width=WIDTH // 2, height=HEIGHT // 2)  # another resolution's calibration
        pub_info.publish(wrong)
        harness.spin_until(lambda: False, 0.3)
        before = len(harness.fused)
        harness.publish_pair(bgr, thermal)
        harness.spin_until(lambda: len(harness.fused) > before, 10)
        harness.spin_until(lambda: False, 0.5)
        assert proc.poll() is None, (tmp_path / "node.log").read_text()
    harness.close()
    fused = {(f.header.stamp.sec, f.header.stamp.nanosec): f for f in harness.fused}
    assert len(infos) >= 3
    for out in infos:
        key = (out.header.stamp.sec, out.header.stamp.nanosec)
        assert key in fused and out.header == fused[key].header  # one header per fused image
        assert list(out.k) == list(info.k) and (out.width, out.height) == (WIDTH, HEIGHT)
    # the mismatched CameraInfo is refused, named in the log, never republished
    assert all(out.width == WIDTH for out in infos)
    assert "camera_info is 320x256 but the RGB image is 640x512" in (
        (tmp_path / "node.log").read_text()
    )


def _change_state(harness: Harness, transition: int) -> bool:
    """Ask fusion_node for a lifecycle transition over its ~/change_state service."""
    from lifecycle_msgs.srv import ChangeState

    client = harness.node.create_client(ChangeState, "fusion_node/change_state")
    assert client.wait_for_service(timeout_sec=30.0), "no fusion_node/change_state service"
    request = ChangeState.Request()
    request.transition.id = transition
    future = client.call_async(request)
    harness.spin_until(future.done, 120)
    harness.node.destroy_client(client)
    return future.result().success


def _lifecycle_state(harness: Harness) -> str:
    from lifecycle_msgs.srv import GetState

    client = harness.node.create_client(GetState, "fusion_node/get_state")
    assert client.wait_for_service(timeout_sec=30.0)
    future = client.call_async(GetState.Request())
    harness.spin_until(future.done, 30)
    harness.node.destroy_client(client)
    return future.result().current_state.label


def _outputs_while_sending(harness: Harness, bgr, thermal, seconds: float = 1.5) -> int:
    """Pairs sent for `seconds`; returns how many detection messages came back."""
    before = len(harness.detections)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        harness.publish_pair(bgr, thermal)
        harness.spin_until(lambda: False, 0.1)
    harness.spin_until(lambda: False, 0.5)
    return len(harness.detections) - before


def test_lifecycle_driven_over_dds(ros_context, tmp_path, node_checkpoint, vifb_dir):
    from lifecycle_msgs.msg import Transition

    bgr, thermal = vifb_pair(vifb_dir)
    harness = Harness(ros_context)
    log = tmp_path / "node.log"
    with running(node_args(node_checkpoint, "autostart:=false"), log) as proc:
        assert _lifecycle_state(harness) == "unconfigured"
        assert _outputs_while_sending(harness, bgr, thermal, 0.5) == 0
        states = []
        for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            assert _change_state(harness, transition)
            states.append(_lifecycle_state(harness))
        assert states == ["inactive", "active"]
        harness.wait_for_node(bgr, thermal)
        assert _outputs_while_sending(harness, bgr, thermal) > 0
        assert _change_state(harness, Transition.TRANSITION_DEACTIVATE)
        harness.spin_until(lambda: False, 0.5)
        assert _outputs_while_sending(harness, bgr, thermal) == 0  # inactive: no output at all
        assert any(
            {kv.key: kv.value for kv in s.values}.get("state") == "inactive"
            for a in harness.diagnostics[-5:]
            for s in a.status
        )
        assert _change_state(harness, Transition.TRANSITION_CLEANUP)
        assert _lifecycle_state(harness) == "unconfigured"
        for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            assert _change_state(harness, transition)
        harness.wait_for_node(bgr, thermal)
        assert _outputs_while_sending(harness, bgr, thermal) > 0  # reconfigured, live again
        assert proc.poll() is None, log.read_text()
    harness.close()
    text = log.read_text()
    assert text.count("configured: ") == 2 and "cleaned up: model released" in text


def test_a_failed_configure_leaves_the_managed_node_up_and_says_why(ros_context, tmp_path):
    from lifecycle_msgs.msg import Transition

    harness = Harness(ros_context)
    args = node_args("/nonexistent/model.pt", "autostart:=false")
    with running(args, tmp_path / "node.log") as proc:
        assert not _change_state(harness, Transition.TRANSITION_CONFIGURE)
        assert _lifecycle_state(harness) == "unconfigured"
        harness.spin_until(lambda: False, 1.0)
        assert proc.poll() is None  # a lifecycle manager may fix the parameter and retry
    harness.close()
    errors = [
        {kv.key: kv.value for kv in s.values}.get("configure_error", "")
        for a in harness.diagnostics
        for s in a.status
    ]
    assert any(e.startswith("parameter checkpoint:") for e in errors)
    assert "configure failed: parameter checkpoint:" in (tmp_path / "node.log").read_text()


def test_frames_missing_from_a_cameras_stamps_are_counted(
    ros_context, tmp_path, node_checkpoint, vifb_dir
):
    bgr, thermal = vifb_pair(vifb_dir)
    harness = Harness(ros_context)
    log = tmp_path / "node.log"
    with running(node_args(node_checkpoint), log) as proc:
        harness.wait_for_node(bgr, thermal)
        period = 50_000_000  # a 20 Hz rig
        base = time.time_ns()
        for k in [*range(15), *range(20, 24)]:  # frames 15-19 never arrive
            harness.publish_pair(bgr, thermal, stamp_ns=base + k * period)
            harness.spin_until(lambda: False, 0.05 if k != 14 else 0.3)
        harness.spin_until(lambda: False, 1.0)
        assert proc.poll() is None, log.read_text()
    harness.close()
    values = {kv.key: kv.value for kv in statuses(harness)["fusion_node: pipeline"].values}
    assert values["rgb_frames_missing"] == "5" and values["thermal_frames_missing"] == "5"
    assert values["rgb_messages_lost"] == "0"  # the middleware lost nothing here
    assert "rgb: 5 frame(s) missing before stamp" in log.read_text()


def test_thermal_as_16_bit_png_fuses_like_raw_counts(
    ros_context, tmp_path, node_checkpoint, vifb_dir
):
    import cv2
    from sensor_msgs.msg import CompressedImage

    from fusion_perception.ros.image_conversions import image_to_msg

    bgr, thermal = vifb_pair(vifb_dir)
    harness = Harness(ros_context)
    pub_png = harness.node.create_publisher(CompressedImage, "thermal/compressed", 5)
    params = ("thermal_compressed:=true", "thermal_topic:=thermal/compressed")
    png = cv2.imencode(".png", thermal)[1].tobytes()

    def publish(data: bytes, fmt: str) -> int:
        stamp = harness.next_stamp()
        rgb = image_to_msg(bgr, "bgr8")
        rgb.header.stamp, rgb.header.frame_id = stamp, "rgb_optical"
        msg = CompressedImage(format=fmt, data=data)
        msg.header.stamp, msg.header.frame_id = stamp, "thermal_optical"
        harness.pub_rgb.publish(rgb)
        pub_png.publish(msg)
        return stamp.sec * 1_000_000_000 + stamp.nanosec

    log = tmp_path / "node.log"
    with running(node_args(node_checkpoint, *params), log) as proc:
        deadline = time.monotonic() + 60
        while not harness.detections and time.monotonic() < deadline:
            publish(png, "mono16; png compressed ")
            harness.spin_until(lambda: bool(harness.detections), 0.5)
        good = publish(png, "mono16; png compressed ")
        assert _answered(harness, good)
        jpeg = cv2.imencode(".jpg", (thermal // 64).astype("uint8"))[1].tobytes()
        bad = publish(jpeg, "mono16; jpeg compressed")
        assert not _answered(harness, bad, timeout=1.0)
        assert proc.poll() is None, log.read_text()
    from_png = _fused_of(harness, good)
    harness.detections.clear()  # the second node's answers only
    with running(node_args(node_checkpoint), tmp_path / "raw.log"):
        harness.wait_for_node(bgr, thermal)
        raw = _send(harness, bgr, thermal)
        assert _answered(harness, raw)
        from_raw = _fused_of(harness, raw)
    harness.close()
    # the PNG carried the counts exactly: the same fused image as the raw mono16 message
    np.testing.assert_array_equal(from_png, from_raw)
    assert "declares mono16 but the payload decodes to uint8" in log.read_text()


def test_bad_input_is_reported_and_the_node_keeps_going(
    ros_context, tmp_path, node_checkpoint, vifb_dir
):
    bgr, thermal = vifb_pair(vifb_dir)
    harness = Harness(ros_context)
    log = tmp_path / "node.log"
    nan_thermal = np.full((HEIGHT, WIDTH), 30.0, np.float32)
    nan_thermal[10, 10] = math.nan

    cases = [
        (
            "unknown encoding",
            lambda: _publish_with_encoding(harness, bgr, thermal, "yuv422"),
            "yuv422",
        ),
        ("bad data length", lambda: _publish_truncated(harness, bgr, thermal), "data: length"),
        (
            "size mismatch",
            lambda: harness.publish_pair(bgr, thermal[: HEIGHT // 2, : WIDTH // 2].copy()),
            "size mismatch",
        ),
        ("NaN in 32FC1", lambda: harness.publish_pair(bgr, nan_thermal, "32FC1"), "finite"),
        ("empty image", lambda: _publish_empty(harness, bgr), "empty"),
        (
            "stamps backwards",
            lambda: _publish_backwards(harness, bgr, thermal, 0.05),
            "message rejected: stamp_backwards",
        ),
        (
            "clock jump",
            lambda: _publish_backwards(harness, bgr, thermal, 5.0),
            "clock jumped back 5.00 s (stamp_backwards",
        ),
    ]
    with running(node_args(node_checkpoint), log) as proc:
        harness.wait_for_node(bgr, thermal)
        for name, publish_bad, _ in cases:
            publish_bad()
            time.sleep(0.3)
            before = len(harness.detections)
            harness.publish_pair(bgr, thermal)
            got = harness.spin_until(lambda b=before: len(harness.detections) > b, 15)
            assert got, f"no output after '{name}':\n{log.read_text()}"
            assert proc.poll() is None, f"node died after '{name}':\n{log.read_text()}"
    harness.close()
    text = log.read_text()
    for name, _, expected in cases:
        assert expected in text, f"no specific error logged for '{name}':\n{text}"


def _publish_with_encoding(harness: Harness, bgr, thermal, encoding: str) -> None:
    stamp = harness.next_stamp()
    from fusion_perception.ros.image_conversions import image_to_msg

    rgb = image_to_msg(bgr, "bgr8")
    ir = image_to_msg(thermal, "mono16")
    ir.encoding = encoding
    rgb.header.stamp = ir.header.stamp = stamp
    harness.pub_rgb.publish(rgb)
    harness.pub_thermal.publish(ir)


def _publish_truncated(harness: Harness, bgr, thermal) -> None:
    from fusion_perception.ros.image_conversions import image_to_msg

    stamp = harness.next_stamp()
    rgb = image_to_msg(bgr, "bgr8")
    ir = image_to_msg(thermal, "mono16")
    ir.data = ir.data[:-100]
    rgb.header.stamp = ir.header.stamp = stamp
    harness.pub_rgb.publish(rgb)
    harness.pub_thermal.publish(ir)


def _publish_empty(harness: Harness, bgr) -> None:
    from sensor_msgs.msg import Image

    from fusion_perception.ros.image_conversions import image_to_msg

    stamp = harness.next_stamp()
    rgb = image_to_msg(bgr, "bgr8")
    ir = Image(encoding="mono16", height=0, width=0, step=0)
    rgb.header.stamp = ir.header.stamp = stamp
    harness.pub_rgb.publish(rgb)
    harness.pub_thermal.publish(ir)


def _publish_backwards(harness: Harness, bgr, thermal, seconds: float) -> None:
    """A pair `seconds` behind the last one: reordering (small) or a clock jump (large)."""
    harness.publish_pair(bgr, thermal, stamp_ns=harness.stamp_ns - int(seconds * 1e9))


def test_silent_camera_and_qos_mismatch_are_reported(
    ros_context, tmp_path, node_checkpoint, vifb_dir
):
    """Thermal stops -> a diagnostic names it; a best-effort camera vs a reliable subscription ->
    an error naming both profiles (instead of the usual silence)."""
    bgr, thermal = vifb_pair(vifb_dir)
    harness = Harness(ros_context, best_effort_inputs=True)
    log = tmp_path / "node.log"
    args = node_args(node_checkpoint, "rgb_qos.reliability:=reliable")
    with running(args, log):
        assert harness.spin_until(lambda: harness.pub_thermal.get_subscription_count() > 0, 60)
        for _ in range(3):
            harness.publish_pair(bgr, thermal)
            harness.spin_until(lambda: False, 0.1)
        # Now only the (incompatible) RGB publisher keeps going; thermal is silent.
        harness.spin_until(lambda: "thermal camera silent" in _camera_message(harness), 10)
    harness.close()
    assert "thermal camera silent (/thermal/image)" in _camera_message(harness)
    pipeline = statuses(harness)["fusion_node: pipeline"]
    assert pipeline.level == b"\x01" and "thermal" in pipeline.message
    text = log.read_text()
    assert "incompatible QoS on /rgb/image" in text, text
    assert "subscription requests reliability=reliable" in text
    assert "publishers offer" in text and ": reliability=best_effort" in text


def _camera_message(harness: Harness) -> str:
    status = statuses(harness).get("fusion_node: thermal camera")
    return status.message if status else ""


def test_fast_cameras_slow_model_keep_latency_bounded(
    ros_context, tmp_path, node_checkpoint, vifb_dir
):
    """30 Hz in, a model slower than 33 ms: pairs are skipped and counted, output age stays flat.
    Eager torch is the slow backend here (OpenVINO keeps up with 30 Hz on this CPU)."""
    bgr, thermal = vifb_pair(vifb_dir)
    harness = Harness(ros_context)
    args = node_args(node_checkpoint, "publish.annotated:=false", "backend:=torch")
    with running(args, tmp_path / "node.log"):
        harness.wait_for_node(bgr, thermal)
        start = time.monotonic()
        next_frame = start
        while time.monotonic() - start < 6.0:
            if time.monotonic() >= next_frame:
                harness.publish_pair(bgr, thermal)
                next_frame += 1 / 30
            harness.executor.spin_once(timeout_sec=0.002)
        harness.spin_until(lambda: processed(harness) > 0 and _dropped(harness) > 0, 5)
    harness.close()
    ages = [(received - _stamp_s(det)) for received, det in harness.detections]
    assert len(ages) >= 5
    published = 6.0 * 30
    assert len(harness.detections) < published * 0.9, (
        "the model is expected to be slower than 30 Hz"
    )
    # Bounded: the last outputs are no older than the first ones plus a little noise.
    late = sorted(ages[-5:])[2]
    early = sorted(ages[:5])[2]
    assert late < max(3 * early, early + 0.5), (early, late)
    assert late < 1.5
    assert _dropped(harness) > 0


def _stamp_s(det) -> float:
    return det.header.stamp.sec + det.header.stamp.nanosec * 1e-9


def _dropped(harness: Harness) -> int:
    status = statuses(harness).get("fusion_node: pipeline")
    if status is None:
        return 0
    values = {kv.key: kv.value for kv in status.values}
    return int(values.get("rgb_dropped", 0))


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("fallback:=sideways", "parameter fallback: 'sideways' is not one of"),
        ("sync.slop:=5.0", "parameter sync.slop"),
        ("checkpoint:=/nonexistent/model.pt", "parameter checkpoint:"),
        ("device:=cuda:3", "parameter device: 'cuda:3' requested but CUDA is not available"),
        (
            "calibration_file:=/nonexistent/rig.yaml",
            "parameter calibration_file: calibration file not found: /nonexistent/rig.yaml",
        ),
        ("classes:=person,dog", "parameter classes: ['dog'] is not a subset"),
        ("tracking.min_hits:=0", "parameter tracking.min_hits"),
        pytest.param(
            "sync.backend:=message_filters",
            "parameter sync.backend: message_filters is not",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("message_filters") is not None,
                reason="message_filters is installed here: its missing-package error cannot occur",
            ),
        ),
        (
            ["sync.backend:=message_filters", "fallback:=rgb_only"],
            "parameter sync.backend: message_filters passes only matched pairs",
        ),
        (
            ["fusion_task:=detector", "compensation:=/nonexistent/comp.pt"],
            "parameter compensation: compensation: /nonexistent/comp.pt does not exist",
        ),
        ("fusion_task:=robot", "parameter fusion_task: 'robot' is not one of"),
    ],
)
def test_bad_configuration_stops_with_the_parameter_named(
    tmp_path, node_checkpoint, param, expected
):
    import subprocess

    from ros_process import ros_env

    args = node_args(node_checkpoint, *([param] if isinstance(param, str) else param))
    result = subprocess.run(
        [sys.executable, *args],
        env=ros_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_thermal_only_fallback_runs_on_a_registered_smaller_thermal_camera(
    ros_context, tmp_path, node_checkpoint, vifb_dir
):
    """RGB goes silent on a rig whose thermal camera is half the RGB size: with
    fallback thermal_only the node keeps publishing, at the RGB size, stamped by thermal."""
    import cv2
    import yaml

    from fusion_perception.ros.image_conversions import image_to_msg

    bgr, thermal = vifb_pair(vifb_dir)
    small = cv2.resize(thermal, (WIDTH // 2, HEIGHT // 2), interpolation=cv2.INTER_AREA)
    calibration = tmp_path / "calibration.yaml"
    calibration.write_text(
        yaml.safe_dump(
            {
                "homography": [[2.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]],
                "rgb_size": [WIDTH, HEIGHT],
                "thermal_size": [WIDTH // 2, HEIGHT // 2],
            }
        )
    )
    harness = Harness(ros_context)
    log = tmp_path / "node.log"
    args = node_args(
        node_checkpoint,
        "fallback:=thermal_only",
        f"calibration_file:={calibration}",
        "publish.annotated:=false",
    )
    with running(args, log) as proc:
        harness.wait_for_node(bgr, small)
        thermal_stamps = set()
        for _ in range(30):  # 3 s of thermal alone, well past camera_timeout (0.5 s)
            ir = image_to_msg(small, "mono16")
            ir.header.stamp = harness.next_stamp()
            ir.header.frame_id = "thermal_optical"
            thermal_stamps.add((ir.header.stamp.sec, ir.header.stamp.nanosec))
            harness.pub_thermal.publish(ir)
            harness.spin_until(lambda: False, 0.1)
        harness.spin_until(lambda: False, 0.5)
        assert proc.poll() is None, log.read_text()
    harness.close()

    def stamp(msg):
        return (msg.header.stamp.sec, msg.header.stamp.nanosec)

    # thermal stamps, but the RGB camera's frame: the pixels are registered RGB pixels
    fallback = [d for _, d in harness.detections if stamp(d) in thermal_stamps]
    assert len(fallback) >= 5, log.read_text()
    assert {d.header.frame_id for d in fallback} == {"rgb_optical"}
    fused = [f for f in harness.fused if stamp(f) in thermal_stamps]
    assert fused and all((f.width, f.height) == (WIDTH, HEIGHT) for f in fused)
    assert {f.header.frame_id for f in fused} == {"rgb_optical"}
    assert "size mismatch" not in log.read_text()


def _send(harness: Harness, bgr, thermal, encoding: str = "mono16", **kwargs) -> int:
    """Publish a pair; returns its stamp (ns)."""
    rgb = harness.publish_pair(bgr, thermal, encoding, **kwargs)
    return rgb.header.stamp.sec * 1_000_000_000 + rgb.header.stamp.nanosec


def _answered(harness: Harness, stamp_ns: int, timeout: float = 15.0) -> bool:
    """Whether detections for the pair stamped `stamp_ns` came back."""

    def seen() -> bool:
        return any(
            d.header.stamp.sec * 1_000_000_000 + d.header.stamp.nanosec == stamp_ns
            for _, d in harness.detections
        )

    return harness.spin_until(seen, timeout)


def _fused_of(harness: Harness, stamp_ns: int) -> np.ndarray:
    harness.spin_until(lambda: any(_ns(f) == stamp_ns for f in harness.fused), 5)
    (msg,) = [f for f in harness.fused if _ns(f) == stamp_ns][:1]
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, 3).astype(np.int16)


def _ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def test_thermal_units_change_glitch_frames_odd_sizes_and_future_stamps(
    ros_context, tmp_path, node_checkpoint, vifb_dir
):
    """A driver that switches thermal units, a 32FC1 frame of +-3e38, 4096x1 / 1x4096 pairs and a
    camera clock 5 s ahead: each is reported specifically and the node keeps producing output."""
    bgr, thermal = vifb_pair(vifb_dir)
    degrees = (thermal.astype(np.float32) / 100.0 - 40.0).astype(np.float32)
    harness = Harness(ros_context)
    log = tmp_path / "node.log"
    with running(node_args(node_checkpoint, "publish.annotated:=false"), log) as proc:
        harness.wait_for_node(bgr, thermal)
        # Units change within the stream: each frame after the switch is still processed.
        for encoding, image in (
            ("mono16", thermal),
            ("mono8", (thermal // 64).astype(np.uint8)),
            ("32FC1", degrees),
            ("mono16", thermal),
        ):
            assert _answered(harness, _send(harness, bgr, image, encoding)), (
                f"no output after switching to {encoding}:\n{log.read_text()}"
            )
        # A glitch frame of huge finite values: the next frames look as before it.
        for _ in range(3):
            steady = _send(harness, bgr, degrees, "32FC1")
            assert _answered(harness, steady), log.read_text()
        before = _fused_of(harness, steady)
        glitch = degrees.copy()
        glitch[: HEIGHT // 2] = 3e38
        glitch[HEIGHT // 2 :] = -3e38
        assert _answered(harness, _send(harness, bgr, glitch, "32FC1")), log.read_text()
        after = None
        for _ in range(2):
            after = _send(harness, bgr, degrees, "32FC1")
            assert _answered(harness, after), log.read_text()
        assert np.abs(_fused_of(harness, after) - before).mean() < 1.0
        # Elongated images: a specific error, then normal service.
        for size in ((1, 4096), (4096, 1)):
            line_bgr = np.full((*size, 3), 100, np.uint8)
            line_ir = np.full(size, 7000, np.uint16)
            _send(harness, line_bgr, line_ir)
            harness.spin_until(lambda: False, 0.3)
            assert _answered(harness, _send(harness, bgr, thermal)), log.read_text()
        # A camera clock 5 s ahead: flagged in diagnostics and the log.
        future = _send(harness, bgr, thermal, stamp_ns=time.time_ns() + 5_000_000_000)
        flagged = harness.spin_until(
            lambda: "in the future" in _status_message(harness, "thermal camera"), 10
        )
        assert flagged, log.read_text()
        assert _answered(harness, future), log.read_text()
        assert proc.poll() is None, log.read_text()
    harness.close()
    text = log.read_text()
    assert "thermal encoding changed from mono16 to mono8" in text, text
    assert "thermal encoding changed from mono8 to 32FC1" in text, text
    assert "thermal encoding changed from 32FC1 to mono16" in text, text
    assert "percentile EMA holds bounds" not in text
    # Both shapes are refused by the same check; the second line falls in the 2 s log throttle,
    # so its count is read from the diagnostics.
    assert "size: a 4096x1 image (aspect ratio 4096:1) is too elongated for the network" in text
    pipeline = {kv.key: kv.value for kv in statuses(harness)["fusion_node: pipeline"].values}
    assert int(pipeline["errors.input.size"]) == 2, pipeline
    assert "Assertion failed" not in text and "internal" not in text
    assert re.search(r"thermal stamp is (4\.9\d|5\.00) s ahead of this node's clock", text), text
    camera = statuses(harness)["fusion_node: thermal camera"]
    assert camera.level == b"\x01"
    assert any(kv.key == "stamp_ahead_s" for kv in camera.values)


def _status_message(harness: Harness, suffix: str) -> str:
    status = statuses(harness).get(f"fusion_node: {suffix}")
    return status.message if status else ""


def test_empty_compressed_rgb_and_streams_that_never_pair(
    ros_context, tmp_path, node_checkpoint, vifb_dir
):
    """An empty CompressedImage is a named error; thermal stamped 50 ms after RGB with the default
    20 ms slop never pairs: diagnostics turn WARN and one log line gives the offset to set."""
    import cv2
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CompressedImage

    from fusion_perception.ros.image_conversions import image_to_msg

    bgr, thermal = vifb_pair(vifb_dir)
    ok, jpeg = cv2.imencode(".jpg", bgr)
    assert ok
    harness = Harness(ros_context)
    pub = harness.node.create_publisher(CompressedImage, "rgb/compressed", QoSProfile(depth=5))

    def send(data: bytes, thermal_delay_ns: int = 0) -> int:
        stamp = harness.next_stamp()
        rgb = CompressedImage(format="jpeg", data=data)
        rgb.header.stamp, rgb.header.frame_id = stamp, "rgb_optical"
        ir = image_to_msg(thermal, "mono16")
        ns = stamp.sec * 1_000_000_000 + stamp.nanosec
        ir.header.stamp = rclpy_time(ns + thermal_delay_ns)
        pub.publish(rgb)
        harness.pub_thermal.publish(ir)
        return ns

    log = tmp_path / "node.log"
    args = node_args(
        node_checkpoint, "rgb_compressed:=true", "rgb_topic:=rgb/compressed", "sync.slop:=0.02"
    )
    with running(args, log) as proc:
        deadline = time.monotonic() + 60
        answered = False
        while time.monotonic() < deadline and not answered:
            if pub.get_subscription_count() and harness.pub_thermal.get_subscription_count():
                answered = _answered(harness, send(jpeg.tobytes()), 0.5)
            else:
                harness.spin_until(lambda: False, 0.2)
        assert answered, log.read_text()
        send(b"")
        harness.spin_until(lambda: False, 0.3)
        assert _answered(harness, send(jpeg.tobytes())), log.read_text()
        # 5 Hz, thermal always 50 ms late: nothing pairs.
        start = time.monotonic()
        while time.monotonic() - start < 6.0:
            send(jpeg.tobytes(), thermal_delay_ns=50_000_000)
            harness.spin_until(lambda: False, 0.2)
            if "have not paired" in _status_message(harness, "pipeline"):
                break
        assert proc.poll() is None, log.read_text()
    harness.close()
    text = log.read_text()
    assert "rgb: data: CompressedImage (format 'jpeg') has no data (0 bytes)" in text, text
    assert "Assertion failed" not in text
    pipeline = statuses(harness)["fusion_node: pipeline"]
    assert pipeline.level == b"\x01", pipeline.message
    assert "have not paired for" in pipeline.message
    for where in (pipeline.message, text):
        assert "thermal stamps are 50.0 ms after rgb" in where, where
        assert "sync.thermal_offset:=-0.050" in where and "sync.slop:=0.051" in where, where
    assert text.count("have not paired for") == 1, text
    values = {kv.key: kv.value for kv in pipeline.values}
    assert float(values["unpaired_s"]) >= 3.0
    assert abs(float(values["thermal_minus_rgb_ms"]) - 50.0) < 1.0


def rclpy_time(ns: int):
    import rclpy.time

    return rclpy.time.Time(nanoseconds=ns).to_msg()


def test_fusion_task_detector_publishes_the_compensated_image(
    ros_context, tmp_path, node_checkpoint, vifb_dir
):
    import torch

    from fusion_perception.checkpoint import load_checkpoint
    from fusion_perception.compensation import Compensation, save_compensation
    from fusion_perception.model.compensation import CompensationConfig

    checkpoint = load_checkpoint(node_checkpoint)
    torch.manual_seed(0)
    compensation = Compensation.fresh(CompensationConfig(), checkpoint, checkpoint.fingerprint())
    torch.nn.init.normal_(compensation.net.head.weight, std=0.5)  # as if trained: not the identity
    path = save_compensation(compensation, tmp_path / "compensation.pt")
    bgr, thermal = vifb_pair(vifb_dir)
    harness = Harness(ros_context)
    fused = {}
    for task, params in (
        ("viewer", ()),
        ("detector", ("fusion_task:=detector", f"compensation:={path}")),
    ):
        harness.detections.clear()
        log = tmp_path / f"{task}.log"
        with running(node_args(node_checkpoint, *params), log) as proc:
            harness.wait_for_node(bgr, thermal)
            stamp = _send(harness, bgr, thermal)
            assert _answered(harness, stamp), log.read_text()
            fused[task] = _fused_of(harness, stamp)
            assert proc.poll() is None, log.read_text()
    harness.close()
    assert fused["viewer"].shape == fused["detector"].shape == (HEIGHT, WIDTH, 3)
    assert np.abs(fused["detector"] - fused["viewer"]).mean() > 0.5
