"""Task planning (light, imported by the web process) and asset pipelines (heavy, run in children)."""
