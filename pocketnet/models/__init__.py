"""Backbones and margin heads.

timm is imported first: its import registers the face nets (:mod:`pocketnet.timm_hook`), and
some nets are built from timm's parts, so a net module imported on its own must not be the one
that starts that registration halfway through its own import."""

import timm  # noqa: F401
