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

"""
What colcon (ament_python) and pip install: package.xml, setup.py data_files, scripts.

Quick checks of what a ``colcon build`` installs (the launch tier runs the build itself): the
manifest is well formed, every launch and config file, the ament index marker and package.xml
are installed to share/, every node has a console script that ``ros2 run`` finds in
lib/sparse_perception, and the built wheel really contains the kernels as a sub-package.
"""

import configparser
import importlib
import os
from pathlib import Path
import runpy
import shutil
import subprocess
import sys
from unittest import mock
import xml.etree.ElementTree as ElementTree
import zipfile

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = 'sparse_perception'


@pytest.fixture(scope='module')
def setup_kwargs():
    captured = {}
    cwd = Path.cwd()
    with mock.patch('setuptools.setup', lambda **kwargs: captured.update(kwargs)):
        try:
            os.chdir(REPO)  # colcon runs setup.py from the package folder
            runpy.run_path(str(REPO / 'setup.py'), run_name='__main__')
        finally:
            os.chdir(cwd)
    return captured


@pytest.fixture(scope='module')
def manifest():
    return ElementTree.parse(REPO / 'package.xml').getroot()


def test_package_xml(manifest, setup_kwargs):
    assert manifest.get('format') == '3'
    assert manifest.findtext('name') == PACKAGE
    assert manifest.findtext('export/build_type') == 'ament_python'
    assert manifest.findtext('version') == setup_kwargs['version']
    exec_deps = {e.text for e in manifest.findall('exec_depend')}
    assert {'rclpy', 'sensor_msgs', 'std_msgs', 'geometry_msgs', 'visualization_msgs',
            'diagnostic_msgs', 'lifecycle_msgs', 'launch', 'launch_ros', 'python3-numpy',
            'python3-opencv'} <= exec_deps
    test_deps = {e.text for e in manifest.findall('test_depend')}
    assert {'ament_copyright', 'ament_flake8', 'ament_pep257', 'python3-pytest'} <= test_deps


def _installed(setup_kwargs):
    return {(dest, src) for dest, files in setup_kwargs['data_files'] for src in files}


def test_data_files_install_every_launch_and_config_file(setup_kwargs):
    installed = _installed(setup_kwargs)
    assert ('share/ament_index/resource_index/packages', f'resource/{PACKAGE}') in installed
    assert (REPO / 'resource' / PACKAGE).is_file()
    assert (f'share/{PACKAGE}', 'package.xml') in installed
    for path in sorted((REPO / 'launch').glob('*.launch.py')):
        assert (f'share/{PACKAGE}/launch', f'launch/{path.name}') in installed
    for path in sorted((REPO / 'config').glob('*.yaml')):
        assert (f'share/{PACKAGE}/config', f'config/{path.name}') in installed
    for _, src in installed:
        assert (REPO / src).is_file(), f'data_files names a missing file {src}'


def test_every_node_has_a_console_script_and_every_script_a_main(setup_kwargs):
    scripts = dict(entry.replace(' ', '').split('=', 1)
                   for entry in setup_kwargs['entry_points']['console_scripts'])
    node_files = {p.stem for p in (REPO / PACKAGE / 'nodes').glob('*_node.py')}
    assert node_files <= set(scripts), f'nodes lacking a script: {node_files - set(scripts)}'
    assert 'sparse-perception' in scripts
    for name, target in scripts.items():
        module, func = target.split(':')
        assert callable(getattr(importlib.import_module(module), func)), name


def test_the_main_job_installs_what_its_default_models_need(setup_kwargs):
    # The default models are TFLite files (the tflite extra), whose dense passes run on the
    # TFLite interpreter (litert); the replay decodes and plots (opencv, replay). A fresh
    # machine has only what scripts/demo installs.
    line = next(ln for ln in (REPO / 'scripts' / 'demo').read_text().splitlines()
                if 'env.sh' in ln)
    extras = set(line.split()[-1].split(','))
    assert {'opencv', 'replay', 'tflite', 'litert'} <= extras <= set(
        setup_kwargs['extras_require'])


def test_scripts_go_where_ros2_run_looks():
    config = configparser.ConfigParser()
    config.read(REPO / 'setup.cfg')
    assert config['develop']['script_dir'] == '$base/lib/' + PACKAGE
    assert config['install']['install_scripts'] == '$base/lib/' + PACKAGE


def test_kernels_are_a_plain_subpackage_of_this_checkout(setup_kwargs):
    # No package_dir mapping: a mapped folder would let a checkout on PYTHONPATH import
    # another checkout's kernels.
    assert 'package_dir' not in setup_kwargs
    assert PACKAGE + '.kernels' in setup_kwargs['packages']
    assert 'kernels' not in setup_kwargs['packages']
    assert not (REPO / 'kernels').exists()
    assert importlib.import_module(PACKAGE + '.kernels').__file__.startswith(
        str(REPO / PACKAGE / 'kernels'))


@pytest.mark.slow
def test_built_wheel_contents(tmp_path):
    # Build from a copy: setuptools leaves build/ and egg-info folders where it builds.
    source = tmp_path / 'source'
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        '.venv', '.git', 'build', '*.egg-info', '__pycache__', '.*_cache', 'runs'))
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
                    '-q', '-w', str(tmp_path), str(source)], check=True, cwd=tmp_path)
    wheel, = tmp_path.glob('*.whl')
    names = set(zipfile.ZipFile(wheel).namelist())
    assert f'{PACKAGE}/kernels/__init__.py' in names
    assert not any(n.startswith('kernels/') for n in names)
    data = f'{PACKAGE}-{wheel.name.split("-")[1]}.data/data/'
    assert data + f'share/ament_index/resource_index/packages/{PACKAGE}' in names
    assert data + f'share/{PACKAGE}/package.xml' in names
    for path in (REPO / 'launch').glob('*.launch.py'):
        assert data + f'share/{PACKAGE}/launch/{path.name}' in names
    for path in (REPO / 'config').glob('*.yaml'):
        assert data + f'share/{PACKAGE}/config/{path.name}' in names
    # Where `ros2 run` and launch files look for the nodes (pip puts console scripts in bin/).
    for node in ('perception_node', 'segmentation_node', 'pose_node'):
        assert data + f'lib/{PACKAGE}/{node}' in names
    # Data shipped inside the package (the bundled clip and its notice) is in the wheel.
    for path in (REPO / PACKAGE / 'data').rglob('*'):
        if path.is_file():
            assert path.relative_to(REPO).as_posix() in names, f'{path} not in the wheel'
