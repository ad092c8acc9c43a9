"""`python -m workbench.setup_assets`: prepare what the bundled models and scorers need offline.

Converts each bundled model's GGUF weights to the safetensors cache (once; later runs check the
cache and return) and writes the NLTK punkt tables the IFEval verifiers read.
"""

from __future__ import annotations

import time

from workbench.weights import BUNDLED, cache_dir, convert, is_valid


def main() -> None:
    from workbench._punkt import ensure_punkt_tab

    ensure_punkt_tab()
    for spec in BUNDLED.values():
        if is_valid(cache_dir(spec)):
            continue
        start = time.perf_counter()
        print(f"[setup] converting {spec.name} GGUF weights to safetensors (once)", flush=True)
        convert(spec)
        print(f"[setup] {spec.name} ready in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
