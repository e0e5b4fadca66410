"""Test-wide set-up: loopback-only DDS and a ROS domain of our own, set before anything imports rclpy."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Real visible/infrared pairs: the full VIFB set beside the repository, else the subset in test/data.
SHARED_VIFB = REPO.parent / "shared" / "data" / "vifb"
VIFB = SHARED_VIFB if (SHARED_VIFB / "vis").is_dir() else REPO / "test" / "data" / "vifb"
# Test the working tree, not the copies `make test` installed into the venv (those serve the
# console scripts and share/ files).
for source in (REPO / "training", REPO):
    if str(source) not in sys.path:
        sys.path.insert(0, str(source))


def pytest_configure(config: pytest.Config) -> None:
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    os.environ.setdefault(
        "FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_loopback.xml")
    )
    config.addinivalue_line("markers", "slow: takes more than ~10 s; run by `make test` too")
    config.addinivalue_line("markers", "ros: needs rclpy and talks DDS on loopback")


@pytest.fixture
def ros_context():
    """A fresh rclpy context per test, so no test depends on global ROS state."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()


@pytest.fixture(scope="session")
def vifb_dir() -> Path:
    return VIFB


@pytest.fixture(scope="session")
def node_checkpoint(tmp_path_factory) -> Path:
    """An untrained nano checkpoint (classes person, car) small enough for fast node tests."""
    from fusion_perception.cli.init import main as fusion_init

    out = tmp_path_factory.mktemp("checkpoints") / "nano.pt"
    args = [str(REPO / "config" / "models" / "nano.yaml"), str(out), "--classes", "person,car"]
    assert fusion_init([*args, "--size", "320x256"]) == 0
    return out
