"""LightningModules: one per stage (teacher, student; search comes later)."""
