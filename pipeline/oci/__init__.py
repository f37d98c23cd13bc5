"""Talking to OCI registries: image references, credentials, and the distribution API client."""
