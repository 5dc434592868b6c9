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
Where a measured figure came from: the machine, the software versions and the source commit.

Every result the package writes (replay reports, ``eval`` results and sweeps, benchmarks)
records its provenance with these functions, so that a CPU, a core count or a commit is
looked up in one way everywhere. Nothing here runs at import; nothing imports torch or
another heavy module just to read its version.
"""

from __future__ import annotations

import os
from pathlib import Path
import platform
import sys
from typing import Any, Iterable

# Distributions that install a module under another name (import name -> distribution names).
_DISTRIBUTIONS = {
    'cv2': ('opencv-python-headless', 'opencv-python', 'opencv-contrib-python'),
    'yaml': ('PyYAML',),
    'ai_edge_litert': ('ai-edge-litert',),
}
# The names results use for modules whose import name says less.
_DISPLAY_NAMES = {'cv2': 'opencv'}
# Names the commit of a checkout copied without its .git (source_commit).
SOURCE_COMMIT_ENV = 'SPARSE_PERCEPTION_SOURCE_COMMIT'
# The modules an environment block lists (torch first: the one that matters most).
ENVIRONMENT_MODULES = ('numpy', 'torch', 'cv2', 'rosbags', 'matplotlib', 'scipy', 'triton',
                       'ai_edge_litert')


def cpu_model() -> str:
    """Return the CPU's model name."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as stream:
            for line in stream:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int | None:
    """Return how many CPUs this process may run on (its affinity; all of them without one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


# What changes how the C allocator hands out memory. With glibc's defaults large blocks go
# back to the system when freed, so a stock torch pass touches fresh pages (page faults) on
# every frame; these variables change that, and with it the dense reference's wall time.
ALLOCATOR_VARIABLES = ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'MALLOC_TOP_PAD_',
                       'MALLOC_ARENA_MAX', 'GLIBC_TUNABLES', 'LD_PRELOAD')


def allocator() -> str:
    """Return how the C allocator was configured: 'defaults' or the variables that were set."""
    found = [f'{name}={os.environ[name]}' for name in ALLOCATOR_VARIABLES if name in os.environ]
    return ', '.join(found) if found else 'defaults'


def machine() -> dict[str, Any]:
    """Return the machine: CPU model, CPUs it has, CPUs this process may use, the platform."""
    return {'cpu': cpu_model(), 'cores': os.cpu_count(), 'usable_cores': usable_cores(),
            'platform': platform.platform(), 'allocator': allocator()}


def load_average() -> list[float] | None:
    """Return the 1, 5 and 15 minute load averages (None where the system has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def package_version(module: str) -> str | None:
    """
    Return the version of a module (import name) or distribution, None when not installed.

    A module already imported answers with its ``__version__``; any other is looked up in the
    installed distributions, so that asking never imports it.
    """
    from importlib import metadata

    if module == 'python':
        return platform.python_version()
    if module == 'sparse_perception':
        from sparse_perception import __version__
        return __version__
    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, '__version__', None):
        return str(loaded.__version__)
    for name in _DISTRIBUTIONS.get(module, (module,)):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def versions(modules: Iterable[str]) -> dict[str, str | None]:
    """Return ``{name: version}`` for ``modules`` (import names, 'python' or distributions)."""
    return {_DISPLAY_NAMES.get(m, m): package_version(m) for m in modules}


RESULTS_DIR = 'bench/results'  # where the benchmarks' committed results live


def source_commit(repo: Path | None = None) -> tuple[str | None, bool | None]:
    """
    Return the commit of the checkout ``repo`` (default: this one) and whether it was changed.

    Changed means tracked files differ from the commit, results under ``bench/results`` aside:
    those are what benchmarks write, so that each of several runs in a row would otherwise
    find the checkout changed by the runs before it.

    Without a ``.git`` (an installed package, a copy of a checkout sent to another machine)
    the commit is what $SPARSE_PERCEPTION_SOURCE_COMMIT names, if set, and whether the files
    differ from it is unknown: (named or None, None); then the version says what ran.
    """
    import subprocess

    repo = repo or Path(__file__).resolve().parents[2]
    if not (repo / '.git').exists():
        named = os.environ.get(SOURCE_COMMIT_ENV, '').strip()
        return (named or None), None
    # A query must not write: `git status` would refresh the checkout's index, and on a full
    # disk (or beside the user's own git command) leave an index.lock behind.
    env = dict(os.environ, GIT_OPTIONAL_LOCKS='0')
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=repo, capture_output=True,
                                text=True, check=True, timeout=10, env=env).stdout.strip()
        status = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no', '--',
                                 '.', f':(exclude){RESULTS_DIR}'],
                                cwd=repo, capture_output=True, text=True, check=True,
                                timeout=10, env=env).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, bool(status.strip())


def environment(device_setting: str) -> dict[str, Any]:
    """
    Return the provenance block of a result: versions, machine and device, source commit.

    ``device_setting`` is the run's ``model.device``; where torch is already imported, the
    device that setting resolved to is recorded too (never imports torch just for this).
    """
    found = versions(('sparse_perception', 'python') + ENVIRONMENT_MODULES)
    device: dict[str, Any] = {'setting': device_setting, **machine()}
    torch = sys.modules.get('torch')
    if torch is not None:
        cuda = torch.cuda.is_available()
        device['cuda_available'] = cuda
        device['used'] = device_setting if device_setting != 'auto' else (
            'cuda' if cuda else 'cpu')
        if cuda and device['used'] == 'cuda':
            device['gpu'] = torch.cuda.get_device_name()
            found['cuda'] = torch.version.cuda
        device['torch_threads'] = torch.get_num_threads()
    commit, dirty = source_commit()
    return {'versions': found, 'device': device,
            'source': {'commit': commit, 'tracked_files_modified': dirty}}
