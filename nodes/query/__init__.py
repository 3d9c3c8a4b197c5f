"""The node's query service: protected aggregate queries and the steps of stepped modes.

- :mod:`nodes.query.servicer` -- ``QueryService``: queries, sign-offs for others, node info;
- :mod:`nodes.query.job` -- a query as received: spec, protection and statement checked together;
- :mod:`nodes.query.compute` -- an admitted query's computation: aggregate, limit, noise, protect;
- :mod:`nodes.query.steps` -- ``ProtocolService``: the signed steps of multi-step modes;
- :mod:`nodes.query.jobs` -- per-job state of multi-step modes (bounded, expiring).
"""
