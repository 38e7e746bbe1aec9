"""The Dagster layer: thin wiring from the runbook's core logic to assets, checks and resources."""
