"""Multi-party protocol state machines: pure, no I/O."""
