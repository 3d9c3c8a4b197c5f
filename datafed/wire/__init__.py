"""The signed objects that travel between parties, and their conversion to and from protobuf.

- :mod:`datafed.wire.signing` -- signed requests: Ed25519 over a domain-separated body;
- :mod:`datafed.wire.statement` -- the one job statement every participant of a job receives;
- :mod:`datafed.wire.signoff` -- another agency's signed approval of one use of a dataset;
- :mod:`datafed.wire.serde` -- protobuf messages <-> domain objects (the boundary, docs/wire.md).
"""
