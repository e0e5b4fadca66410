"""ament_python packaging: the runtime package plus its share/ files (launch, config, models)."""

from pathlib import Path

from setuptools import find_packages, setup

package_name = "fusion_perception"
here = Path(__file__).parent


def share_files(folder: str) -> list[tuple[str, list[str]]]:
    """Install every file under `folder` into share/<package>/<folder>, keeping sub-folders."""
    entries: dict[str, list[str]] = {}
    for path in sorted((here / folder).rglob("*")):
        if path.is_file():
            rel = path.relative_to(here)
            entries.setdefault(f"share/{package_name}/{rel.parent}", []).append(str(rel))
    return sorted(entries.items())


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=[package_name, f"{package_name}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        *share_files("launch"),
        *share_files("config"),
        *share_files("models"),
    ],
    # ROS packages come from rosdep (package.xml), never from pip; torch is user-installed.
    install_requires=["numpy", "pyyaml", "scipy"],
    zip_safe=True,
    maintainer="fusion_perception maintainers",
    maintainer_email="maintainers@fusion-perception.invalid",
    description="RGB + thermal fusion and detection (UniFusOD) for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "fusion_node = fusion_perception.ros.fusion_node:main",
            "synthetic_camera = fusion_perception.ros.synthetic_camera:main",
            "fusion-init = fusion_perception.cli.init:entry_point",
            "fusion-info = fusion_perception.cli.info:entry_point",
            "fusion-infer = fusion_perception.cli.infer:entry_point",
            "fusion-demo = fusion_perception.ros.demo:main",
        ],
    },
)
