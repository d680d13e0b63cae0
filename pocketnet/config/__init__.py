"""Config schemas, composition and the checks that turn config mistakes into clear errors."""
