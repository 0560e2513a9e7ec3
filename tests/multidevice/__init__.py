"""Multi-device and multi-process helpers, run in subprocesses by test_multidevice."""
