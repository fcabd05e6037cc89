"""The tools' tests read benchmark results: they share the bench tests' small artifacts."""

from tests.runtime.bench.conftest import arts  # noqa: F401  (a fixture)
