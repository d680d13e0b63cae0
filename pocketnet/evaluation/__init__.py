"""Verification metrics, practical metrics and results tables."""
