"""Where torch runs. Imports nothing else of the project, so any module can use it without an import cycle."""
from __future__ import annotations


def resolve_device(name: str) -> str:
    """"auto" is "cuda" when torch sees a GPU, else "cpu"; any other name is checked by torch and returned as a
    string ("cuda:1", "mps", ...). ValueError for a name torch does not know."""
    import torch  # slow to import: only when a device is resolved

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return str(torch.device(name))
    except (RuntimeError, TypeError):
        raise ValueError(f"expected auto, cpu, cuda, cuda:N or another torch device, got {name!r}") from None
