"""The launch file, config/uav.yaml and the node's declared parameters agree (launch is not
installable here, so the file is checked statically; the nodes themselves run in other tests)."""

from __future__ import annotations

import ast
import py_compile
from pathlib import Path

import yaml

from fusion_perception.ros.params import PARAMS

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "uav.launch.py"

DECLARED = {spec.name for spec in PARAMS}


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def launch_ast() -> ast.Module:
    return ast.parse(LAUNCH.read_text())


def test_launch_file_compiles() -> None:
    py_compile.compile(str(LAUNCH), doraise=True)


def test_launch_arguments() -> None:
    tree = launch_ast()
    (arguments,) = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ARGUMENTS"
    ]
    names = {elt.elts[0].value for elt in arguments.elts}
    assert {
        "namespace",
        "rgb_topic",
        "thermal_topic",
        "params_file",
        "checkpoint",
        "device",
        "rviz",
        "record",
        "use_synthetic_camera",
        "bag_dir",
    } <= names


def test_parameters_passed_to_fusion_node_are_declared_and_in_uav_yaml() -> None:
    tree = launch_ast()
    passed = set()
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Node"):
            continue
        keywords = {k.arg: k.value for k in call.keywords}
        if getattr(keywords.get("executable"), "value", "") != "fusion_node":
            continue
        for item in keywords["parameters"].elts:
            if isinstance(item, ast.Dict):
                passed |= {key.value for key in item.keys}
    assert passed == {"rgb_topic", "thermal_topic", "checkpoint", "device"}
    assert passed <= DECLARED
    yaml_params = flatten(
        yaml.safe_load((REPO / "config" / "uav.yaml").read_text())["/**"]["ros__parameters"]
    )
    assert passed <= set(yaml_params)


def test_uav_yaml_matches_declared_parameters() -> None:
    values = flatten(
        yaml.safe_load((REPO / "config" / "uav.yaml").read_text())["/**"]["ros__parameters"]
    )
    assert set(values) == DECLARED
    for spec in PARAMS:
        assert type(values[spec.name]) is type(spec.default), spec.name


def test_rviz_config_shows_fused_annotated_and_thermal() -> None:
    rviz = yaml.safe_load((REPO / "config" / "uav.rviz").read_text())
    topics = {d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"]}
    assert topics == {"fusion_node/fused/image", "fusion_node/detections/image", "thermal/image"}
