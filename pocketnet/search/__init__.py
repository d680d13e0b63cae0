"""DARTS search on faces: the supernet, the architecture gradient, the data split, the record."""
