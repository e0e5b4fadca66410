#!/usr/bin/env bash
# Create or update the development venv (.venv): pinned wheels, vision_msgs built into it, the package
# itself installed non-editably (so share/fusion_perception exists). Idempotent: each step keeps a stamp
# and is skipped when its inputs are unchanged.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${FUSION_VENV:-$repo/.venv}
python=${PYTHON:-python3}
cd "$repo"
# Everything below may start rclpy (interface smoke checks): stay on loopback.
# shellcheck source=tools/ros_env.sh
source "$repo/tools/ros_env.sh"

say() { printf '[setup] %s\n' "$*"; }
fingerprint() { cat "$@" | sha256sum | cut -c1-32; }
# pip prints one warning per missing local index directory; keep real messages only.
quiet_pip() { env -u _ROS_WHEELS_BOOTSTRAP_COMPLETE "$venv/bin/python" -m pip "$@" 2>&1 | grep -v '^WARNING: Location' || return "${PIPESTATUS[0]}"; }

if [[ ! -x "$venv/bin/python" ]]; then
    version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    [[ "$version" == "3.11" ]] || say "warning: $python is $version; torch wheels on this machine are for 3.11"
    say "creating $venv"
    "$python" -m venv "$venv"
fi

req_stamp="$venv/.requirements.stamp"
req_fp=$(fingerprint requirements/venv.txt)
if [[ ! -f "$req_stamp" || "$(cat "$req_stamp")" != "$req_fp" ]]; then
    say "installing pinned requirements (first run: about 2 minutes)"
    quiet_pip install --disable-pip-version-check -q -r requirements/venv.txt
    echo "$req_fp" >"$req_stamp"
fi

tools/build_interfaces.sh "$venv" interfaces/vision_msgs

pkg_stamp="$venv/.package.stamp"
pkg_fp=$(git ls-files -co --exclude-standard -- setup.py setup.cfg package.xml resource fusion_perception \
    launch config training models 2>/dev/null | sort | xargs -r -d '\n' sha256sum 2>/dev/null | sha256sum | cut -c1-32)
if [[ ! -f "$pkg_stamp" || "$(cat "$pkg_stamp")" != "$pkg_fp" ]]; then
    say "installing fusion_perception and fusion_training into the venv"
    quiet_pip install --disable-pip-version-check -q --no-deps --no-build-isolation --force-reinstall . ./training
    echo "$pkg_fp" >"$pkg_stamp"
fi

"$venv/bin/python" - <<'PY'
import rclpy, torch, torchvision, cv2  # noqa: F401
from vision_msgs.msg import Detection2DArray, LabelInfo  # noqa: F401
PY
say "venv ready: $venv"
