"""Backbones and margin heads."""
