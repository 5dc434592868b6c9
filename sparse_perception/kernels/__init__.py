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
GPU kernels (Triton), each beside its pure-torch reference.

Per op, one module holds the ``@triton.jit`` kernel, its launcher (a binder ``*_args`` that
returns one launch, and a function that binds and launches at once) and its ``*_ref`` in plain
torch, whose docstring gives every tensor's shape. The references are what the engine's
reference backend runs; ``ops`` registers each op as a ``torch.library`` custom op (the
reference for every device, the launcher for CUDA). Nothing here imports the engine: the
engine imports the kernels.

Importing this package imports nothing else; importing a kernel module imports Triton (the
modules still import without it, for their references) and makes the choice between compiled
kernels and Triton's CPU interpreter (``runtime``).

Modules (one per kernel family):

- ``steps``: the epilogue steps the engine lowers to and the kernels apply (no Triton)
- ``runtime``: Triton, the interpreter switch, launching and argument checks
- ``gather``: rows of a cache at an index; copies into listed tiles (padding, concatenation)
- ``epilogue``: the fused epilogue, change test and scatter (``store_epilogue``)
- ``conv1x1``: 1x1 convolution as a GEMM over active rows (tensor cores)
- ``depthwise``: depthwise KxK convolution over tiles (stride 1 and 2, dilation)
- ``conv``: dense and grouped KxK convolution over tiles (implicit GEMM)
- ``pool``: max and average pooling over tiles
- ``resample``: nearest/bilinear/bicubic/area resampling from taps
- ``masks``: receptive-field dilation, tile flags, sync-free active-tile lists
- ``frame``: the sync-free frame's input intake and global average pooling
- ``positionwise``: softmax, log-softmax and argmax over channels, per position
- ``window``: tile geometry shared by the windowed kernels
- ``ops``: the ``torch.library`` custom ops (namespace ``sparse_perception``)
- ``aot``: ahead-of-time compilation of recorded kernel specialisations
"""
