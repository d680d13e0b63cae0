"""LightningModules: one per stage (teacher; search and student come later)."""
