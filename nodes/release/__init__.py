"""The release gate: the one place a data-derived value leaves a node.

Every value computed from a dataset's rows passes one release function of this package
before it leaves the node -- towards an analyst, a collector, another node or the node's
own Flower SuperNode's peers -- and nothing else reads a dataset (``tests/test_layering.py``
holds that rule: outside ``nodes/release/`` and ``nodes/stores/`` no code calls a store's
reading methods). A release function

1. reads the dataset through the store (``nodes/stores/``), after admission;
2. applies the dataset's rule (``docs/invisibility.md``): under differential privacy, noise
   on every group of the node's *own* declared domain and its remainder, never on keys,
   sizes or multiplicities the analyst chose; on exact data, SQL's answer over the job's
   consortium, nothing withheld per node; analyst bounds saturate inside the protection;
3. charges the one accountant (:mod:`nodes.policy.budget`) where a release carries its own
   epsilon and delta (admission charged the rest);
4. records what left: a ``released`` entry with the digest of the answer, per-node facts
   in the entry's private part (auditors only).

The channels and their release functions:

- protected queries -- :func:`nodes.release.query.release_query`;
- intersection-sums, training updates and evaluations, collection windows -- their own
  modules beside it.

A failure after admission leaves one fixed text (:mod:`nodes.rpc`): what went wrong is in
the ledger entry's private part, never in what the caller reads.
"""
