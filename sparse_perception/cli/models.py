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

"""``sparse-perception models list|fetch|info``: what models there are, get them, inspect one."""

from __future__ import annotations

import json
from pathlib import Path
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'models', help='list, fetch and inspect models',
        description='Registered models, the MediaPipe model download, and what a model holds.')
    actions = parser.add_subparsers(dest='models_command', metavar='ACTION')

    listing = actions.add_parser('list', help='registered models and whether their files are '
                                 'present')
    listing.add_argument('--models-dir', help='folder searched first for model files')
    listing.add_argument('--json', action='store_true',
                         help='print a JSON list of {name, kind, available, device_mode, '
                         'device_reason}; available: the file is there and matches what '
                         '`models fetch` recorded for it (device_reason says why not); '
                         'device_mode is checked by loading and lowering each available model '
                         'for the sync-free device mode (device_reason: why not, null when it '
                         'runs)')
    listing.set_defaults(func=_list)

    fetch = actions.add_parser(
        'fetch', help='download the MediaPipe wheel with pip and extract its TFLite models',
        description='Runs `pip download --no-deps mediapipe==VERSION` (MediaPipe itself is not '
        'installed) and extracts the selfie segmentation and pose models into the cache.')
    fetch.add_argument('--cache-dir', help='where to put the files (default: '
                       '$SPARSE_PERCEPTION_MODEL_CACHE or ~/.cache/sparse_perception/models, '
                       'sub-folder mediapipe)')
    fetch.add_argument('--wheel', help='use this mediapipe wheel file instead of downloading')
    fetch.add_argument('--version', default=None, help='mediapipe version (default: the one '
                       'the registry was made for)')
    fetch.add_argument('--pip-arg', action='append', default=[], metavar='ARG',
                       help='extra argument for pip download (repeatable), e.g. '
                       '--pip-arg=--index-url=URL')
    fetch.add_argument('--force', action='store_true',
                       help='download again even when the cache already holds the files')
    fetch.set_defaults(func=_fetch)

    info = actions.add_parser('info', help='load a model and describe it')
    info.add_argument('model', help='registered name or file path')
    info.add_argument('--models-dir', help='folder searched first for model files')
    info.add_argument('--fake-quant', choices=('none', 'tail', 'all'),
                      help="TFLite import mode (default: the registry's)")
    info.add_argument('--json', action='store_true', help='print JSON')
    info.set_defaults(func=_info)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _missing_models_dir(args, action: str) -> bool:
    """Say so when --models-dir names no folder (it would be passed over in silence)."""
    if args.models_dir is not None and not Path(args.models_dir).expanduser().is_dir():
        print(f'sparse-perception models {action}: error: --models-dir {args.models_dir}: no '
              'such folder', file=sys.stderr)
        return True
    return False


def _list(args) -> int:
    from sparse_perception.models.registry import candidate_paths, REGISTRY

    if _missing_models_dir(args, 'list'):
        return 1
    if args.json:
        print(json.dumps(_list_json(args.models_dir), indent=2))
        return 0
    rows, damage = [], {}
    for entry in REGISTRY.values():
        found = next((p for p in candidate_paths(entry, args.models_dir) if p.is_file()), None)
        if found is not None and found not in damage:  # entries share files: checked once
            damage[found] = _damage(found)
        if found is None:
            cell = f'missing ({entry.filename})'
        else:
            cell = str(found) if damage[found] is None else f'damaged ({found})'
        rows.append((entry.name, entry.kind, 'any' if entry.resize == 'none' else entry.resize,
                     cell))
    widths = [max(len(r[i]) for r in rows + [('name', 'kind', 'fit', 'file')])
              for i in range(4)]
    for row in [('name', 'kind', 'fit', 'file')] + rows:
        print('  '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    for reason in damage.values():
        if reason is not None:
            print(reason)
    return 0


def _damage(path: Path) -> str | None:
    """Return why ``path`` does not match what ``models fetch`` recorded, or None."""
    from sparse_perception.models.registry import DamagedModelError, verify_model_file

    try:
        verify_model_file(path)
    except DamagedModelError as exc:
        return str(exc)
    return None


def _list_json(models_dir: str | None) -> list[dict]:
    """Every registered model with its file's presence and whether the device mode runs it."""
    from sparse_perception.models.registry import (candidate_paths, device_mode_reason,
                                                   load_model, REGISTRY)

    listing = []
    for entry in REGISTRY.values():
        found = next((p for p in candidate_paths(entry, models_dir) if p.is_file()), None)
        damage = _damage(found) if found is not None else None
        if found is None:
            device_mode, reason = False, f'model file missing ({entry.filename}); not checked'
        elif damage is not None:
            device_mode, reason, found = False, f'{damage}; not checked', None
        else:
            try:
                reason = device_mode_reason(load_model(entry.name, 'cpu',
                                                       models_dir=models_dir))
            except (OSError, ValueError, ImportError) as exc:
                reason = f'the model does not load: {exc}'
            device_mode = reason is None
        listing.append({'name': entry.name, 'kind': entry.kind, 'available': found is not None,
                        'device_mode': device_mode, 'device_reason': reason})
    return listing


def _fetch(args) -> int:
    from sparse_perception.models.fetch import fetch_mediapipe, FetchError
    from sparse_perception.models.registry import MEDIAPIPE_VERSION

    target = None
    if args.cache_dir is not None:
        if not args.cache_dir.strip():  # an unset shell variable: never the default instead
            print('sparse-perception models fetch: error: --cache-dir is empty; give a folder, '
                  'or leave the flag out for the default cache', file=sys.stderr)
            return 1
        target = Path(args.cache_dir).expanduser() / 'mediapipe'
    try:
        files = fetch_mediapipe(target, wheel=args.wheel and str(Path(args.wheel).expanduser()),
                                version=args.version or MEDIAPIPE_VERSION,
                                pip_args=args.pip_arg, force=args.force)
    except FetchError as exc:
        print(f'sparse-perception models fetch: error: {exc}', file=sys.stderr)
        return 1
    print(f'{len(files)} files ready in {next(iter(files.values())).parent}')
    return 0


def _info(args) -> int:
    from sparse_perception.models.registry import load_model, ModelNotFound

    if _missing_models_dir(args, 'info'):
        return 1
    try:
        model = load_model(args.model, models_dir=args.models_dir, fake_quant=args.fake_quant)
    except (ModelNotFound, ValueError, ImportError) as exc:
        print(f'sparse-perception models info: error: {exc}', file=sys.stderr)
        return 1
    summary = model.describe()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for key, value in summary.items():
        if isinstance(value, dict):
            print(f'{key}:')
            for inner_key, inner in value.items():
                print(f'  {inner_key}: {inner}')
        elif isinstance(value, list) and len(value) > 8:
            print(f'{key}: {", ".join(str(v) for v in value)}')
        else:
            print(f'{key}: {value}')
    return 0
