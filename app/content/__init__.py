"""Content encryption at rest: the batch jobs (encrypting rows left by migration 0011,
re-encrypting after a key rotation) and the helpers migrations use."""
