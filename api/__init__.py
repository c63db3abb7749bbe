"""HTTP routes, one module per resource; errors are mapped to JSON in `api.errors`."""
