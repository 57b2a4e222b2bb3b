"""Reusable helpers for tests that start real processes (tritonserver, gateway) on loopback."""
