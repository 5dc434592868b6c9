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

"""Build for colcon (ament_python) and for pip alike."""

from glob import glob
from pathlib import Path
import sys
import xml.etree.ElementTree as ElementTree

from setuptools import find_packages, setup

PACKAGE = 'sparse_perception'
HERE = Path(__file__).resolve().parent

# package.xml is the single source of the version and description.
_manifest = ElementTree.parse(HERE / 'package.xml').getroot()
VERSION = _manifest.findtext('version').strip()
DESCRIPTION = ' '.join(_manifest.findtext('description').split())

# One console script per node kind, `ros2 run sparse_perception <name>`: each runs the one node
# class with the heads of its kind.
NODES = [
    'perception_node',
    'segmentation_node',
    'pose_node',
]

# Exact pins: one ROS distro per environment, and these are test-only (on a robot rclpy and
# the messages come from the ROS install, never from PyPI).
ROS_TEST_REQUIRES = [
    'ros-kilted-rclpy[fastrtps]==9.1.2',
    'ros-kilted-sensor-msgs==5.5.1',
    'ros-kilted-std-msgs==5.5.1',
    'ros-kilted-geometry-msgs==5.5.1',
    'ros-kilted-visualization-msgs==5.5.1',
    'ros-kilted-diagnostic-msgs==5.5.1',
    'ros-kilted-lifecycle-msgs==2.3.0',
    'ros-kilted-ament-flake8==0.19.2',
    'ros-kilted-ament-pep257==0.19.2',
]

TEST_REQUIRES = [
    'pytest==9.2.0',
    'hypothesis==6.170.15',
    # ament_flake8 runs flake8 with these plugins (ROS 2's own lint rules).
    'flake8==7.5.0',
    'flake8-builtins==3.1.0',
    'flake8-comprehensions==3.17.0',
    'flake8-docstrings==1.7.0',
    'flake8-import-order==0.19.2',
    'flake8-quotes==3.4.0',
    'pydocstyle==6.3.0',
    # The Triton CPU interpreter runs the GPU kernels' code in CI.
    'triton==3.6.0',
    # The replay's plots and JHMDB reader (the `replay` extra), exercised by the tests.
    'matplotlib==3.10.9',
    'scipy==1.15.3',
    # TFLite import: the schema reader (also the tflite extra) and the reference interpreter
    # that the imported models are checked against.
    'tflite==2.18.0',
    'flatbuffers==25.12.19',
    'ai-edge-litert==2.3.0',
]

DATA_FILES = [
    ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
    ('share/' + PACKAGE, ['package.xml']),
    ('share/' + PACKAGE + '/launch', sorted(glob('launch/*.launch.py'))),
    ('share/' + PACKAGE + '/config', sorted(glob('config/*.yaml'))),
]
# `ros2 run` and launch files look for node executables in lib/<package>. colcon puts the
# console scripts there (setup.cfg); pip builds a wheel, whose console scripts land in bin/, so
# a wheel also carries one forwarder per node in lib/<package> (colcon never builds a wheel, so
# the two cannot collide).
if any(command in sys.argv for command in ('bdist_wheel', 'editable_wheel')):
    DATA_FILES.append(('lib/' + PACKAGE, [f'resource/lib/{node}' for node in NODES]))

setup(
    name=PACKAGE,
    version=VERSION,
    description=DESCRIPTION,
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=[PACKAGE, PACKAGE + '.*']),
    package_data={PACKAGE: ['data/*', 'data/*/*']},
    data_files=DATA_FILES,
    # Only what pip metadata can vouch for on a robot too: OpenCV usually comes from the
    # distribution there (python3-opencv), which pip cannot see, so it is an extra.
    install_requires=[
        'setuptools',
        'numpy>=1.21',
        'PyYAML>=5.4',
        'rosbags>=0.10.4',
        'torch>=2.1',
    ],
    extras_require={
        'opencv': ['opencv-python-headless>=4.13'],
        'gpu': ['triton>=3.0'],
        # Replay reports: plots (matplotlib) and JHMDB .mat ground truth (scipy); on a robot
        # python3-matplotlib and python3-scipy, which pip cannot see.
        'replay': ['matplotlib>=3.5', 'scipy>=1.7'],
        # Importing TFLite models (sparse_perception.models): the flatbuffer schema reader.
        'tflite': ['tflite>=2.10', 'flatbuffers>=2.0'],
        # The dense runtime `model.runtime: litert`: the TFLite interpreter (XNNPACK) on the
        # model's own file, and the schema reader that rewrites MediaPipe's custom operator.
        'litert': ['ai-edge-litert>=1.0', 'tflite>=2.10', 'flatbuffers>=2.0'],
        'test': TEST_REQUIRES,
        'ros-test': ROS_TEST_REQUIRES,
    },
    zip_safe=False,
    entry_points={
        'console_scripts': [
            'sparse-perception = sparse_perception.cli:main',
        ] + [f'{node} = {PACKAGE}.nodes.{node}:main' for node in NODES],
    },
)
