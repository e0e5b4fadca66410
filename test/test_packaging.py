"""The package installs the way both audiences install it: pip into the venv, colcon in a workspace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROS_DEPENDENCIES = {"rclpy", "sensor_msgs", "std_msgs", "vision_msgs", "diagnostic_msgs"}


def test_package_xml_declares_ros_dependencies() -> None:
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "fusion_perception"
    assert root.find("export/build_type").text == "ament_python"
    depends = {e.text for e in root if e.tag.endswith("depend")}
    assert ROS_DEPENDENCIES | {"python3-numpy", "python3-opencv"} <= depends


def test_setup_py_never_asks_pip_for_ros_packages() -> None:
    text = (REPO / "setup.py").read_text()
    requires = text.split("install_requires=")[1].split("]")[0]
    for name in ROS_DEPENDENCIES:
        assert name not in requires


def test_share_files_are_installed_in_the_venv() -> None:
    from ament_index_python import packages as ament_index

    prefix = os.environ.get("AMENT_PREFIX_PATH", str(Path(sys.prefix)))
    os.environ["AMENT_PREFIX_PATH"] = prefix
    share = Path(ament_index.get_package_share_directory("fusion_perception"))
    assert (share / "package.xml").is_file()
    assert (share / "config" / "fastdds_loopback.xml").is_file()


def test_demo_model_is_installed_small_and_loads() -> None:
    from ament_index_python import packages as ament_index

    from fusion_perception.checkpoint import load_checkpoint
    from fusion_perception.ros.configure import default_checkpoint

    installed = default_checkpoint()
    share = Path(ament_index.get_package_share_directory("fusion_perception"))
    assert installed == share / "models" / "demo.pt"
    assert installed.read_bytes() == (REPO / "models" / "demo.pt").read_bytes()
    assert installed.stat().st_size <= 25 * 2**20  # the shipped model's size budget
    checkpoint = load_checkpoint(installed)
    assert checkpoint.class_names == ["person", "car"]
    provenance = checkpoint.provenance
    config = provenance["config"]
    assert provenance["tool"] == "fusion-train" and config["name"] == "real_lite0_stage2"
    assert config["init_weights"] is not None  # stage 2 starts from stage 1 (real_lite0.yaml)
    assert config["seed"] == 1 and provenance["metrics"]["mAP50"] > 0.8
    assert provenance["config"]["model"] == "config/models/lite0.yaml"  # no build-machine paths


@pytest.mark.slow
def test_colcon_builds_the_package_in_a_scratch_workspace(tmp_path: Path) -> None:
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists():
        colcon = shutil.which("colcon")
    assert colcon, "colcon is part of the development venv (requirements/venv.txt)"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "fusion_perception").symlink_to(REPO)
    env = dict(os.environ, AMENT_PREFIX_PATH=sys.prefix, CMAKE_PREFIX_PATH=sys.prefix)
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    result = subprocess.run(
        [str(colcon), "--log-base", "log", "build", "--symlink-install"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 package finished" in result.stdout, result.stdout
    installed = tmp_path / "install" / "fusion_perception"
    assert (installed / "share" / "fusion_perception" / "package.xml").exists()
    index = installed / "share" / "ament_index" / "resource_index" / "packages"
    assert (index / "fusion_perception").exists()
