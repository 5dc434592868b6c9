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

"""``ros2`` commands and long-running ``ros2 launch`` / ``ros2 run`` processes, for tests."""

import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time


def ros2(env, *args, timeout=60.0, tries=3):
    """
    Run ``ros2 ARGS`` (the CLI of the test environment); return (exit status, output).

    A command that says 'Node not found' did nothing: its ``--spin-time`` of discovery was too
    short on a busy machine. It is run again, as a user would, up to ``tries`` times in all.
    """
    for _ in range(tries):
        done = subprocess.run([str(Path(sys.executable).parent / 'ros2'), *args], env=env,
                              capture_output=True, text=True, timeout=timeout)
        output = done.stdout + done.stderr
        if not (done.returncode and 'Node not found' in output):
            break
    return done.returncode, output


class Running:
    """A ``ros2 launch`` or ``ros2 run`` process whose output is collected as it comes."""

    def __init__(self, env, *args):
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / 'ros2'), *args], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self):
        return ''.join(self.lines)

    def wait_for(self, text, timeout=180.0):
        """Wait until ``text`` is printed; fail with the output if the process ends first."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.output:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f'{text!r} never printed; output:\n{self.output}')

    def interrupt(self, timeout=60.0):
        """
        Send SIGINT as Ctrl-C in a terminal does, to the whole process group; return the status.

        ``ros2 run`` leaves the node to get it from the terminal; ``ros2 launch`` passes it on,
        so that a node gets it twice.
        """
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout)
        finally:
            self.stop()
        self._reader.join(5)
        return self.process.returncode

    def stop(self):
        """Kill what is left of the process group (after a failed test)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
