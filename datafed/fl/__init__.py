"""Federated learning on Flower: the analyst's ServerApp, strategies, SecAgg+ and DP wiring."""
