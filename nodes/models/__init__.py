"""Base models: the embedded tiny model built from a config, and loaders for real ones."""


def resolve_base(base: str, sha256: str = "") -> str:
    """A local directory for the manifest's base model, checked against its pinned digest."""
    from pathlib import Path

    from nodes.models.tiny import file_sha256, tiny_model_dir

    path = tiny_model_dir() if base == "tiny" else Path(base)
    weights = Path(path) / "model.safetensors"
    if sha256 and weights.exists() and file_sha256(weights) != sha256:
        raise ValueError(f"base model {base} does not match the manifest's model.sha256; "
                         "use the base the run owner pinned")
    return str(path)
