"""Base models: the embedded tiny model built from a config, and loaders for real ones."""
