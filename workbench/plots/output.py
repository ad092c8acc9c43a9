"""Writing figures to disk: static images via kaleido + a local Chromium, and HTML on request.

    export(fig, "layer_sweep_phi3", out_dir="figures")                       # figures/layer_sweep_phi3.png
    export(fig, "sweep", formats=("png", "html"))                            # + self-contained HTML (~4 MB)
    export(fig, "sweep", formats=("png", "html"), include_plotlyjs="directory")  # + HTML sharing one plotly.min.js

Kaleido 1.x drives a headless Chrome/Chromium. We look the browser up ourselves and hand
kaleido its path, so kaleido never searches or offers to download one; we never call
`kaleido.get_chrome`. Lookup order: $BROWSER_PATH (the variable choreographer also
honours), then `chromium`, `chromium-browser`, `google-chrome(-stable)`, `chrome` on PATH,
then the usual /usr/bin locations (PATH may be trimmed in notebook kernels).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go

FIX = (
    "Install Chromium with `apt-get update && apt-get install -y chromium` (as root; Debian puts it at "
    "/usr/bin/chromium), or set BROWSER_PATH to a Chrome/Chromium executable. The workbench never downloads a browser."
)
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_TYPICAL = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome", "/snap/bin/chromium")
_STATIC = ("png", "svg", "pdf", "jpeg", "webp")


class ChromiumNotFoundError(RuntimeError):
    """No usable Chrome/Chromium for static image export."""


def _is_exe(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_chromium() -> str:
    """Path of the browser kaleido should drive; raises ChromiumNotFoundError naming the fix."""
    if env := os.environ.get("BROWSER_PATH"):
        if _is_exe(env):
            return env
        # an explicit setting that is wrong is a mistake to report, not to paper over
        raise ChromiumNotFoundError(f"BROWSER_PATH={env!r} is not an executable file. {FIX}")
    for name in _NAMES:
        if (path := shutil.which(name)) and _is_exe(path):
            return path
    for path in _TYPICAL:
        if _is_exe(path):
            return path
    raise ChromiumNotFoundError(f"No Chrome/Chromium found for static figure export. {FIX}")


def _static_image(fig: go.Figure, fmt: str, scale: float) -> bytes:
    import kaleido  # deferred: only static export needs it

    browser = find_chromium()
    opts = dict(format=fmt, width=fig.layout.width or 900, height=fig.layout.height or 550, scale=scale)
    try:
        # mathjax=False: kaleido would otherwise load MathJax from a CDN; our figures use no LaTeX
        image: bytes = kaleido.calc_fig_sync(fig, opts=opts, kopts=dict(path=browser, mathjax=False))
        return image
    except Exception as err:  # kaleido/choreographer raise a variety of types on a broken browser
        raise ChromiumNotFoundError(f"{fmt} export through {browser} failed ({err!r}). {FIX}") from err


PLOTLY_BUNDLE = "plotly.min.js"


def export(
    fig: go.Figure,
    name: str,
    out_dir: str | Path = "figures",
    formats: Sequence[str] = ("png",),
    scale: float = 2.0,
    include_plotlyjs: bool | str = True,
) -> list[Path]:
    """Write `<out_dir>/<name>.<fmt>` for each format and return the paths.

    PNG by default; static formats go through kaleido. HTML only when asked for
    (`formats=("png", "html")`): with `include_plotlyjs=True` each page embeds plotly.js (renders
    offline anywhere, ~4 MB a page); with "directory" the pages load one shared plotly.min.js
    written beside them (`write_plotlyjs`; its path is returned once, after the pages), so a
    folder of figures carries the bundle once. Pages and bundle must then be moved together.
    """
    if include_plotlyjs not in (True, "directory"):
        raise ValueError(
            f"include_plotlyjs must be True (embedded) or 'directory' (shared), got "
            f"{include_plotlyjs!r}; a CDN link would not render offline"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out / f"{name}.{fmt}"
        if fmt == "html":
            fig.write_html(path, include_plotlyjs=include_plotlyjs, full_html=True)
        elif fmt in _STATIC:
            path.write_bytes(_static_image(fig, fmt, scale))
        else:
            raise ValueError(f"unknown format {fmt!r}; use html or one of {_STATIC}")
        paths.append(path)
    if "html" in formats and include_plotlyjs == "directory":
        paths.append(write_plotlyjs(out))
    return paths


def write_plotlyjs(out_dir: str | Path) -> Path:
    """Write the installed plotly's plotly.min.js into `out_dir` (replacing another version's,
    which plotly itself would leave in place) and return its path."""
    from plotly.offline import get_plotlyjs

    path = Path(out_dir) / PLOTLY_BUNDLE
    bundle = get_plotlyjs()
    if not path.is_file() or path.read_text(encoding="utf-8") != bundle:
        path.write_text(bundle, encoding="utf-8")
    return path
