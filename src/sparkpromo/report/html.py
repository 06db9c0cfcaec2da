"""HTML building blocks and the charts (matplotlib is optional and imported lazily)."""

from __future__ import annotations

import base64
import html
import io as _io
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sparkpromo.report.reading import INSTALL_HINT

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# HTML helpers
# ----------------------------------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "NaN"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def _html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], highlight: int | None = None,
                numeric_from: int = 1) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = ' class="best"' if i == highlight else ""
        cells = "".join(f'<td class="num">{_e(_fmt(v))}</td>' if j >= numeric_from and not isinstance(v, str)
                        else f"<td>{_e(_fmt(v))}</td>" for j, v in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _missing(text: str) -> str:
    return f'<p class="missing">{_e(text)}</p>'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


# ----------------------------------------------------------------------------------------------------------------
# Charts (matplotlib is optional and imported lazily)
# ----------------------------------------------------------------------------------------------------------------
Draw = Callable[[Any], None]  # receives a matplotlib Figure


class Charts:
    """Renders matplotlib figures to inline ``<img>`` tags; degrades to a note when matplotlib is missing."""

    def __init__(self) -> None:
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            log.warning("matplotlib is not installed: the report has tables but no charts (%s)", INSTALL_HINT)
            self._figure: Any = None
            self._canvas: Any = None
        else:
            self._figure, self._canvas = Figure, FigureCanvasAgg

    @property
    def available(self) -> bool:
        return self._figure is not None

    def render(self, alt: str, draw: Draw, size: tuple[float, float] = (8.0, 3.5)) -> str:
        if not self.available:
            return _note(f"Chart '{alt}' not drawn: matplotlib is not installed ({INSTALL_HINT}).")
        # The Figure API with an explicit Agg canvas: no pyplot, no global backend state, nothing to close.
        fig = self._figure(figsize=size, dpi=100, layout="constrained")
        self._canvas(fig)
        draw(fig)
        buf = _io.BytesIO()
        fig.savefig(buf, format="png")
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></figure>'


__all__ = [
    "Draw", "Charts",
]
