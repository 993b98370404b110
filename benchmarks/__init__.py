"""The measuring commands behind BENCHMARKS.md, an importable package: run one from the
repository root as ``python -m benchmarks.<name>``; shared helpers live in :mod:`.report`."""
