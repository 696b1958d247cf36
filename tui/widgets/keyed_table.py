"""A DataTable that is brought up to date from keyed rows, changing only what changed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.text import Text
from textual.widgets import DataTable

Cell = Text | str


def signature(cell: Cell) -> object:
    if isinstance(cell, Text):
        return (cell.plain, str(cell.style), tuple(cell.spans))
    return cell


class KeyedTable(DataTable[Cell]):
    """Columns are fixed at construction; `sync` takes the rows in the wanted order."""

    DEFAULT_CSS = """
    KeyedTable {
        height: auto;
        max-height: 12;
    }
    """

    def __init__(
        self, columns: Sequence[tuple[str, str]], *, id: str | None = None, cursor: bool = False
    ) -> None:
        super().__init__(id=id, cursor_type="row" if cursor else "none", zebra_stripes=True)
        self._column_specs = tuple(columns)
        self._shown: dict[tuple[str, str], object] = {}
        self._keys: list[str] = []

    def on_mount(self) -> None:
        for key, label in self._column_specs:
            self.add_column(label, key=key)

    def sync(self, rows: Mapping[str, Sequence[Cell]]) -> None:
        """Rows in order, by key.  Cells update in place; a changed order (rare: a row
        appearing in the middle) rebuilds the rows."""
        wanted = list(rows)
        kept = [key for key in self._keys if key in rows]
        if kept != wanted[: len(kept)]:
            self.clear()
            self._keys, self._shown = [], {}
        for gone in [key for key in self._keys if key not in rows]:
            self.remove_row(gone)
            self._keys.remove(gone)
        for key, cells in rows.items():
            if key not in self._keys:
                self.add_row(*cells, key=key)
                self._keys.append(key)
                for (column, _), cell in zip(self._column_specs, cells, strict=False):
                    self._shown[(key, column)] = signature(cell)
                continue
            for (column, _), cell in zip(self._column_specs, cells, strict=False):
                mark = signature(cell)
                if self._shown.get((key, column)) != mark:
                    self._shown[(key, column)] = mark
                    self.update_cell(key, column, cell, update_width=True)

    def forget_cells(self) -> None:
        self._shown.clear()
