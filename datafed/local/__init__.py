"""A whole federation on one machine, for examples, demos and tests.

:mod:`datafed.local.federation` starts a CA, party certificates and node processes over
:mod:`datafed.local.synth`'s seeded synthetic agency data (no real records anywhere).
"""
