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
Compile the kernels ahead of time for a GPU target, on any machine (no GPU needed).

Triton's interpreter runs the kernels' Python on the CPU and forgives what the compiler does
not (types that change inside loops, shapes that are not powers of two, ...). This module
records the specialisations a run launches (kernel, argument types, compile-time constants)
and compiles each one to a cubin for a CUDA architecture with the ptxas bundled in Triton's
wheel, so that CI proves the kernels compile for the GPU the benchmark runs on (sm_90, H200).

    python -m sparse_perception.kernels.aot SPECS.json [--arch 90]

runs the compilation (``TRITON_INTERPRET`` must be unset); the specs come from
:class:`SpecRecorder` around an interpreted run.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
from pathlib import Path
import sys
import time
from typing import Any

_POINTER = {'torch.float32': '*fp32', 'torch.float16': '*fp16', 'torch.bfloat16': '*bf16',
            'torch.int32': '*i32', 'torch.int64': '*i64', 'torch.uint8': '*u8',
            'torch.bool': '*i1', 'torch.int16': '*i16', 'torch.int8': '*i8'}


def _constexpr_names(kernel: Any) -> set:
    fn = getattr(kernel, 'fn', kernel)
    names = set()
    for p in inspect.signature(fn).parameters.values():
        if 'constexpr' in str(p.annotation):
            names.add(p.name)
    return names


class SpecRecorder:
    """Collect the distinct specialisations launched (use with ``runtime.RECORDERS``)."""

    def __init__(self) -> None:
        self.specs: dict[str, dict] = {}

    def __call__(self, kernel: Any, grid: tuple, args: tuple, meta: dict) -> None:
        """Record one launch."""
        import torch

        fn = getattr(kernel, 'fn', kernel)
        names = list(inspect.signature(fn).parameters)
        constexpr = _constexpr_names(kernel)
        values = dict(zip(names, args))
        values.update(meta)
        signature, constants = {}, {}
        for name in names:
            value = values[name]
            if name in constexpr:
                signature[name] = 'constexpr'
                constants[name] = value
            elif isinstance(value, torch.Tensor):
                signature[name] = _POINTER[str(value.dtype)]
            elif isinstance(value, bool):
                signature[name] = 'i1'
            elif isinstance(value, int):
                signature[name] = 'i32' if -2 ** 31 <= value < 2 ** 31 else 'i64'
            elif isinstance(value, float):
                signature[name] = 'fp32'
            else:
                raise TypeError(f'{fn.__name__}: argument {name}={value!r} has no Triton type')
        spec = {'module': fn.__module__, 'kernel': fn.__name__, 'signature': signature,
                'constants': constants}
        self.specs[json.dumps(spec, sort_keys=True)] = spec

    def dump(self, path: str | os.PathLike) -> int:
        """Write the specs as JSON; return how many."""
        Path(path).write_text(json.dumps(list(self.specs.values()), indent=1))
        return len(self.specs)


def compile_specs(specs: list[dict], arch: int = 90) -> list[str]:
    """Compile every spec for ``sm_<arch>``; return the failures (empty when all compiled)."""
    if os.environ.get('TRITON_INTERPRET') == '1':
        raise RuntimeError('unset TRITON_INTERPRET: the interpreter compiles nothing')
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget('cuda', arch, 32)
    failures = []
    for spec in specs:
        kernel = getattr(importlib.import_module(spec['module']), spec['kernel'])
        source = ASTSource(fn=kernel, signature=spec['signature'],
                           constexprs=spec['constants'])
        try:
            triton.compile(source, target=target)
        except Exception as exc:  # report every failing specialisation, not just the first
            failures.append(f"{spec['kernel']} {spec['constants']}: "
                            f'{type(exc).__name__}: {str(exc)[:2000]}')
    return failures


def main(argv: list[str] | None = None) -> int:
    """Compile the specs of a JSON file; exit code 1 when one fails."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('specs', help='JSON list written by SpecRecorder.dump')
    parser.add_argument('--arch', type=int, default=90, help='CUDA compute capability [90]')
    args = parser.parse_args(argv)
    specs = json.loads(Path(args.specs).read_text())
    started = time.perf_counter()
    failures = compile_specs(specs, args.arch)
    print(f'{len(specs) - len(failures)} of {len(specs)} kernel specialisations compiled for '
          f'sm_{args.arch} in {time.perf_counter() - started:.1f} s')
    for failure in failures:
        print('FAILED', failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
