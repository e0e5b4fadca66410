# Source before anything starts rclpy: loopback-only DDS, one domain per run, a Fast DDS profile sized for
# camera frames. Kilted ignores ROS_LOCALHOST_ONLY, so discovery is limited with the newer variable.
_fp_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 1 ))}
export FASTDDS_DEFAULT_PROFILES_FILE=${FASTDDS_DEFAULT_PROFILES_FILE:-$_fp_repo/config/fastdds_loopback.xml}
export AMENT_PREFIX_PATH=${FUSION_VENV:-$_fp_repo/.venv}
unset _fp_repo
