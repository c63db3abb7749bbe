"""Task planning (light, used by the web process) and asset pipelines (heavy, run in children)."""
