"""Invoke tasks of the release pipeline."""
