"""Traceability: per-reader stamped copies of files, ``enclave trace``, the on-screen
watermark and view-only levels (see docs/traceability.md)."""
