"""``[limits]``: what one request may cost this node (docs/policy.md#limits)."""

from __future__ import annotations

from pydantic import Field, model_validator

from datafed.config.load import Strict

__all__ = ["LimitsSection"]


class LimitsSection(Strict):
    """``[limits]``: what one request may cost this node (``docs/policy.md#limits``).

    Every limit is checked before admission where the request alone decides it, so a
    refusal spends no budget and says nothing about the data.
    """

    #: Largest query spec, in bytes.
    max_spec_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    #: Most conditions in a WHERE clause.
    max_predicate_nodes: int = Field(default=256, ge=1, le=4096)
    #: Literals in a WHERE clause in all (SQLite binds at most 32766 parameters).
    max_where_values: int = Field(default=4096, ge=1, le=30_000)
    #: Most declared group keys a protected GROUP BY may span.
    max_domain_keys: int = Field(default=10_000, ge=1, le=1_000_000)
    #: Largest protection parameters (a public key, certificates), in bytes.
    max_params_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    #: Largest job statement, in bytes.
    max_statement_bytes: int = Field(default=16 * 1024, ge=1024)
    #: Largest sign-off, in bytes.
    max_signoff_bytes: int = Field(default=16 * 1024, ge=1024)
    #: Cost of an answer: values per group (SQLite returns at most 2000 columns), groups
    #: times values, Paillier ciphertexts, and bytes (``None``: the message limit).
    max_components: int = Field(default=512, ge=1, le=1900)
    #: Most values (groups x components) in one answer.
    max_values: int = Field(default=200_000, ge=1)
    #: Most groups in one answer.
    max_groups: int = Field(default=10_000, ge=1)
    #: Most Paillier ciphertexts in one answer.
    max_ciphertexts: int = Field(default=4096, ge=1)
    #: Largest answer in bytes (``None``: the node's message limit).
    max_answer_bytes: int | None = Field(default=None, ge=1024)
    #: Protocol state: open jobs of stepped modes, pending intersection-sums.
    max_open_jobs: int = Field(default=256, ge=1)
    #: Open stepped-mode jobs one requester may hold.
    max_open_jobs_per_requester: int = Field(default=16, ge=1)
    #: Intersection-sums waiting for their last step, in all.
    max_pending_intersections: int = Field(default=16, ge=1)
    #: Intersection-sums waiting for their last step, per requester.
    max_pending_intersections_per_requester: int = Field(default=8, ge=1)
    #: Analysts' Paillier keys: their DJN tables in bytes, keys per requester, idle expiry.
    paillier_cache_bytes: int = Field(default=512 * 1024 * 1024, ge=0)
    #: Cached Paillier keys per requester (a new one evicts the requester's own).
    paillier_keys_per_requester: int = Field(default=1, ge=1, le=16)
    #: Seconds a cached key must lie idle before another requester's may evict it.
    paillier_key_idle_s: float = Field(default=600.0, gt=0)
    #: Analysts' CKKS public contexts, loaded: their estimated bytes (20x the context).
    ckks_cache_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    #: Cached CKKS contexts per requester (a new one evicts the requester's own).
    ckks_contexts_per_requester: int = Field(default=2, ge=1, le=16)
    #: Seconds a cached context must lie idle before another requester's may evict it.
    ckks_context_idle_s: float = Field(default=600.0, gt=0)
    #: Requesters whose CKKS contexts are cached at once, each in ``ckks_cache_bytes /
    #: ckks_requesters`` of its own; set it to at least the analysts who use ckks here.
    ckks_requesters: int = Field(default=8, ge=1, le=1024)
    #: Threads that run the blocking work of calls (dataset reads, encryption, protocol
    #: steps), shared fairly: the requester served least recently goes first.
    compute_threads: int = Field(default=4, ge=1, le=256)
    #: Of those, how many one requester's work may use at once.
    compute_threads_per_requester: int = Field(default=1, ge=1, le=256)

    @model_validator(mode="after")
    def _per_requester(self) -> LimitsSection:
        if self.max_open_jobs_per_requester > self.max_open_jobs:
            raise ValueError("max_open_jobs_per_requester must not exceed max_open_jobs")
        if self.max_pending_intersections_per_requester > self.max_pending_intersections:
            raise ValueError(
                "max_pending_intersections_per_requester must not exceed max_pending_intersections"
            )
        if self.compute_threads_per_requester > self.compute_threads:
            raise ValueError("compute_threads_per_requester must not exceed compute_threads")
        return self
