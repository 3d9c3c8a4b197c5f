"""The deployable agency node: config, gRPC server, policy, budget, data store, ledger use."""

__all__: list[str] = []
