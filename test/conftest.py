"""Test-wide set-up: loopback-only DDS and a ROS domain of our own, set before anything imports rclpy."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Real visible/infrared pairs: VIFB's 21 pairs in the shared data root ($FUSION_SHARED_DATA, else
# ../shared/data beside the repository). They are not kept in the repository; tests that need them
# take the `vifb_dir` fixture and skip when they are absent.
SHARED_DATA = Path(os.environ.get("FUSION_SHARED_DATA") or REPO.parent / "shared" / "data")
VIFB = SHARED_DATA / "vifb"
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


@pytest.fixture(scope="session", autouse=True)
def artifact_cache(tmp_path_factory) -> Path:
    """Exports made on the fly (an engine, CLI or node with a non-torch backend) go to a folder
    of this session, never into ~/.cache; child processes inherit it."""
    folder = tmp_path_factory.mktemp("artifact_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FUSION_PERCEPTION_CACHE", str(folder))
        yield folder


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
    """VIFB's pairs (vis/, ir/ named by pair); skips the test, naming the missing folder, if absent."""
    missing = [str(VIFB / kind) for kind in ("vis", "ir") if not (VIFB / kind).is_dir()]
    if missing:
        pytest.skip(
            f"VIFB pairs not found: missing {', '.join(missing)} (set FUSION_SHARED_DATA to the "
            "shared data root that holds vifb/)"
        )
    return VIFB


@pytest.fixture(scope="session")
def node_checkpoint(tmp_path_factory) -> Path:
    """An untrained nano checkpoint (classes person, car) small enough for fast node tests."""
    from fusion_perception.cli.init import main as fusion_init

    out = tmp_path_factory.mktemp("checkpoints") / "nano.pt"
    args = [str(REPO / "config" / "models" / "nano.yaml"), str(out), "--classes", "person,car"]
    assert fusion_init([*args, "--size", "320x256"]) == 0
    return out


def few_steps(out: Path, **overrides) -> dict:
    """Overrides of a training recipe for a 2-step CPU run on 8 synthetic scenes into ``out``."""
    return {
        "dataset.train": {"length": 8, "seed": 0},
        "dataset.val": None,
        "max_steps": 2,
        "batch_size": 4,
        "device": "cpu",
        "progress": False,
        "output_dir": str(out),
        **overrides,
    }
