"""The benchmark's machine probe now lives in :mod:`runtime.machine`, which the profile and tune
share; these names stay importable from here."""

from ..machine import (  # noqa: F401
    DeviceChoice,
    MachinePeak,
    PrecisionPeak,
    compute_precision,
    describe,
    environment,
    measure_peak,
    merge_peaks,
    resolve_device,
)
