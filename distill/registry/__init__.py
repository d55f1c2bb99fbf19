"""Talking to OCI distribution registries: authentication and the HTTP client."""
