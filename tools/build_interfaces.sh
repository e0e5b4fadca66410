#!/usr/bin/env bash
# Build ROS 2 interface packages (msg definitions) into a PyPI-wheel venv that acts as the ROS prefix.
#
# Usage: tools/build_interfaces.sh VENV PKG_DIR...
#
# Why this exists: vision_msgs has no PyPI wheel, and colcon workspaces are not used in the venv set-up.
# The wheels' exported CMake targets hard-code the wheel builder's Python/numpy include paths, so they are
# rewritten to this interpreter's paths first (idempotent). A fingerprint of the sources, the interpreter and
# the installed ros-* wheels is stored per package; an unchanged package is skipped.
set -euo pipefail

venv=$(cd "$1" && pwd)
shift
py="$venv/bin/python"
for tool in cmake make gcc g++; do
    command -v "$tool" >/dev/null || { echo "build_interfaces: '$tool' is required (apt-get install cmake g++ make)" >&2; exit 2; }
done
unset AMENT_PREFIX_PATH CMAKE_PREFIX_PATH PYTHONPATH

# Run the venv's python without the ROS wheel bootstrap re-exec flag leaking from a parent process.
vpy() { env -u _ROS_WHEELS_BOOTSTRAP_COMPLETE "$py" "$@"; }

py_include=$(vpy -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_include=$(vpy -c 'import numpy; print(numpy.get_include())')
# Rewrite any foreign python/numpy include directory in exported generator_py targets.
grep -l 'rosidl_generator_py' "$venv"/share/*/cmake/*.cmake 2>/dev/null | while read -r f; do
    sed -i -E \
        -e "s#/[^;\"]*/include/python3\.[0-9]+#${py_include}#g" \
        -e "s#/[^;\"]*/numpy/(_core|core)/include#${np_include}#g" "$f"
done

wheels_fp=$(vpy -m pip list --format=freeze 2>/dev/null | grep -E '^ros-' | sha256sum | cut -c1-16)
for pkg_dir in "$@"; do
    pkg_dir=$(cd "$pkg_dir" && pwd)
    name=$(basename "$pkg_dir")
    stamp="$venv/share/$name/.fusion_build.stamp"
    fp=$( (cd "$pkg_dir" && find . -type f ! -name COLCON_IGNORE | sort | xargs sha256sum; echo "$py_include $np_include $wheels_fp") | sha256sum | cut -c1-32)
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$fp" ]]; then
        echo "build_interfaces: $name unchanged, skipped"
        continue
    fi
    build="$venv/.build_interfaces/$name"
    mkdir -p "$build"
    echo "build_interfaces: building $name into $venv"
    cmake -S "$pkg_dir" -B "$build" -DCMAKE_PREFIX_PATH="$venv" -DCMAKE_INSTALL_PREFIX="$venv" \
        -DPython3_EXECUTABLE="$py" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >"$build.log" 2>&1 \
        || { tail -30 "$build.log" >&2; echo "build_interfaces: configure of $name failed (log: $build.log)" >&2; exit 1; }
    cmake --build "$build" -j"$(nproc)" >>"$build.log" 2>&1 \
        || { tail -30 "$build.log" >&2; echo "build_interfaces: build of $name failed (log: $build.log)" >&2; exit 1; }
    cmake --install "$build" >>"$build.log" 2>&1
    echo "$fp" >"$stamp"
done
