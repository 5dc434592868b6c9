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
Resource limits for the hostile-input tests: full disks, peak memory.

- :func:`run_cli_limited` runs the command line in a child process under a file size limit
  (RLIMIT_FSIZE): every write past it fails with EFBIG, at whatever point of the program it
  happens, as on a disk that fills up midway. Root is not exempt, unlike permission bits.
- :func:`probe_memory` runs a snippet in a child process and returns the peak resident memory
  it added (the high-water mark VmHWM, reset after setup, minus the resident size then) under
  an address-space limit (RLIMIT_AS), so that a memory bomb shows up either as a peak over the
  bound or as a failed allocation, and never takes the test machine down. OpenCV's
  allocations are invisible to tracemalloc; the kernel's accounting sees them.
- :class:`PeakMemory` measures the peak resident memory of this process over a block
  (Linux: ``/proc/self/clear_refs`` resets the high-water mark), for the in-process fuzz tests.
"""

import json
import os
from pathlib import Path
import subprocess
import sys

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20

_LIMITED_CLI = """\
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
limit, double = int(sys.argv[1]), sys.argv[2] == '1'
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
from sparse_perception import cli
if double:  # replays build the pipeline double (test/pipeline_double.py), as in-process
    from pipeline_double import PipelineDouble
    from sparse_perception.replay import job
    job.default_pipeline = lambda: PipelineDouble
sys.exit(cli.main(sys.argv[3:]))
"""


def _env() -> dict:
    path = os.pathsep.join(p for p in (str(REPO / 'test'), str(REPO),
                                       os.environ.get('PYTHONPATH', '')) if p)
    return dict(os.environ, PYTHONPATH=path)


def run_cli_limited(argv: list, file_size: int,
                    double: bool = False) -> subprocess.CompletedProcess:
    """
    Run ``sparse-perception ARGV`` in a child whose files cannot grow past ``file_size``.

    With ``double``, a replay there builds the pipeline double instead of the real Pipeline.
    """
    return subprocess.run([sys.executable, '-c', _LIMITED_CLI, str(file_size),
                           '1' if double else '0', *map(str, argv)],
                          capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)


_PROBE = """\
import json, resource, sys
setup, snippet, headroom = sys.argv[1], sys.argv[2], int(sys.argv[3])
scope = {}
exec(setup, scope)
def resident():
    # The peak that clear_refs resets (VmHWM), not ru_maxrss: a child starts with its
    # parent's ru_maxrss (exec keeps it), so a large pytest process would hide the snippet.
    with open('/proc/self/status') as stream:
        return next(int(line.split()[1]) * 1024 for line in stream
                    if line.startswith('VmHWM:'))
def mapped():
    with open('/proc/self/statm') as stream:
        return int(stream.read().split()[0]) * resource.getpagesize()
# The high-water mark of setup's own allocations must not hide the snippet's (Linux 4.0+;
# elsewhere the probe fails, saying so).
with open('/proc/self/clear_refs', 'w') as stream:
    stream.write('5')
before = resident()
resource.setrlimit(resource.RLIMIT_AS, (mapped() + headroom, resource.RLIM_INFINITY))
try:
    outcome = {'result': repr(eval(snippet, scope))}
except MemoryError as exc:
    outcome = {'error': 'MemoryError', 'message': str(exc)}
except Exception as exc:
    outcome = {'error': type(exc).__name__, 'message': ' '.join(str(exc).split())}
outcome['added_bytes'] = resident() - before
print(json.dumps(outcome))
"""


def probe_memory(setup: str, snippet: str, headroom: int = 1024 * MIB) -> dict:
    """
    Run ``setup`` (imports, building the input), then evaluate ``snippet``, in a child process.

    Returns ``{'result': repr}`` or ``{'error': type name, 'message': text}``, with
    ``added_bytes``: how far the peak resident memory rose during ``snippet``. The child may
    map at most ``headroom`` more bytes than it had after ``setup``.
    """
    run = subprocess.run([sys.executable, '-c', _PROBE, setup, snippet, str(headroom)],
                         capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
    lines = run.stdout.strip().splitlines()
    assert run.returncode == 0 and lines, (
        f'the probe died (status {run.returncode}): {run.stderr[-2000:]}')
    return json.loads(lines[-1])


class PeakMemory:
    """
    Peak resident memory of this process over a ``with`` block, above where it started.

    ``supported`` is False where the high-water mark cannot be reset (not Linux, or a kernel
    before 4.0); ``added_bytes`` is then None.
    """

    STATUS = Path('/proc/self/status')
    CLEAR = Path('/proc/self/clear_refs')

    def __init__(self):
        self.added_bytes = None
        self.supported = self._reset()

    def _reset(self) -> bool:
        try:
            self.CLEAR.write_text('5')  # 5: reset the peak to the current resident size
            return self._field('VmHWM') is not None
        except OSError:
            return False

    def _field(self, name: str):
        for line in self.STATUS.read_text().splitlines():
            if line.startswith(name + ':'):
                return int(line.split()[1]) * 1024
        return None

    def __enter__(self) -> 'PeakMemory':
        if self.supported:
            self._reset()
            self._start = self._field('VmRSS')
        return self

    def __exit__(self, *exc) -> None:
        if self.supported:
            self.added_bytes = self._field('VmHWM') - self._start
