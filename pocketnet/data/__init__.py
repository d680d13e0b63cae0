"""Face data: the synthetic face generator, verification sets, the DataModule."""
