"""Superposition in Transformers."""
