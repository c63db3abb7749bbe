"""Code the tests run in places other than the test process itself."""
