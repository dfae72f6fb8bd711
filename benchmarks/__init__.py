"""`derive bench`: time one training step of small dense networks in several libraries.

Run ``python -m benchmarks --help``. The pieces: :mod:`benchmarks.configs` (networks,
optimizers, FLOP counts, shared data), :mod:`benchmarks.peers` (one module per implementation,
and the interface a peer implements), :mod:`benchmarks.timing` (the common timing loop),
:mod:`benchmarks.worker` (one measurement in a fresh process), :mod:`benchmarks.harness`
(runs them all; :func:`benchmarks.harness.main`) and :mod:`benchmarks.report` (Markdown).
"""
