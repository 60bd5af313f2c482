"""Base models: the embedded tiny model (`tiny`) and pinning of any base (`pinning`)."""
from nodes.models.pinning import BaseError, base_digest, resolve_base

__all__ = ["BaseError", "base_digest", "resolve_base"]
