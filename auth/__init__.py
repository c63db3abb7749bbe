"""Authentication: access tokens, password hashing and the Starlette backend."""
