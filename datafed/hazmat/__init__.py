"""Raw cryptographic primitives ("hazardous materials"): no policy, no I/O."""
