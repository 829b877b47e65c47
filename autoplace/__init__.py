"""autoplace: search where trainable soft-prompt tokens go in a frozen language model's input (and which words).

`autoplace.search`, `autoplace.train` and `autoplace.load` are the Python face of the command line (see api.py);
the machinery of a search (space, screen, study, workers, winner, report) is the subpackage `autoplace.study`.
They are imported on first use, so `import autoplace` (and `autoplace --help`) does not load torch.
"""
__version__ = "0.1.0"
__all__ = ["search", "train", "load", "__version__"]


def __getattr__(name: str):
    if name in ("search", "train", "load", "Artifact", "SearchResult"):
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'autoplace' has no attribute {name!r}")
