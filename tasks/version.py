"""The version of what the pipelines make: part of every content-dedup key (`records.dedup`).

Bump it with any change that alters a pipeline's result or artifacts for the same input, so a
re-upload after an upgrade is processed again instead of reusing the older output.
"""

PIPELINE_VERSION = "2026.12.7"
