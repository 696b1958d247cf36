"""A keyed grid on Textual's line API, for tables that change a little every second.

Textual's DataTable re-renders every visible cell whenever any cell changes (its caches
are keyed by one table-wide update counter): with 64 live tunnels that is ~800 Rich cell
renders a second.  Here each cell is rendered once per change, into segments cached per
cell, and only the screen lines of changed rows are refreshed.  It does what the
dashboard needs: a sticky header and first column, horizontal and vertical scrolling, a
row cursor (keys and mouse), zebra rows, row and header selection messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

Cell = Text | str


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int


def signature(cell: Cell) -> object:
    if isinstance(cell, Text):
        return (cell.plain, str(cell.style), tuple(cell.spans))
    return cell


class Grid(ScrollView, can_focus=True):
    COMPONENT_CLASSES = {
        "grid--header",
        "grid--cursor",
        "grid--odd-row",
        "grid--fixed",
    }
    DEFAULT_CSS = """
    Grid {
        background: $surface;
        color: $foreground;
    }
    Grid > .grid--header {
        background: $panel;
        color: $text;
        text-style: bold;
    }
    Grid > .grid--odd-row {
        background: $surface-lighten-1;
    }
    Grid > .grid--fixed {
        text-style: bold;
    }
    Grid > .grid--cursor {
        background: $primary 40%;
    }
    Grid:focus > .grid--cursor {
        background: $primary;
        color: $text;
        text-style: bold;
    }
    """
    BINDINGS = [
        Binding("up", "cursor(-1)", "Cursor up", show=False),
        Binding("down", "cursor(1)", "Cursor down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,ctrl+home", "edge(0)", "First row", show=False),
        Binding("end,ctrl+end", "edge(1)", "Last row", show=False),
        Binding("left", "scroll_left", "Scroll left", show=False),
        Binding("right", "scroll_right", "Scroll right", show=False),
        Binding("enter", "select", "Select", show=False),
    ]

    cursor_row: reactive[int] = reactive(0, always_update=True)

    class RowSelected(Message):
        def __init__(self, grid: Grid, row_key: str) -> None:
            super().__init__()
            self.grid = grid
            self.row_key = row_key

        @property
        def control(self) -> Grid:
            return self.grid

    class HeaderSelected(Message):
        def __init__(self, grid: Grid, column_key: str) -> None:
            super().__init__()
            self.grid = grid
            self.column_key = column_key

        @property
        def control(self) -> Grid:
            return self.grid

    def __init__(self, columns: Sequence[Column], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.columns = tuple(columns)
        self._cells: dict[str, dict[str, Cell]] = {}
        self._shown: dict[tuple[str, str], object] = {}
        self._segments: dict[tuple[str, str], list[Segment]] = {}
        self._order: list[str] = []
        self._index: dict[str, int] = {}
        self._header: list[Segment] | None = None
        self.updates = 0  # cells re-rendered after a change (the benchmark reads it)

    # -- data ---------------------------------------------------------------------------------
    @property
    def row_keys(self) -> list[str]:
        return list(self._order)

    @property
    def row_count(self) -> int:
        return len(self._order)

    def get_cell(self, row: str, column: str) -> Cell:
        return self._cells[row][column]

    def get_row_index(self, row: str) -> int:
        return self._index[row]

    @property
    def cursor_key(self) -> str | None:
        if not self._order:
            return None
        return self._order[min(self.cursor_row, len(self._order) - 1)]

    def set_row(self, key: str, cells: dict[str, Cell]) -> None:
        """Adds the row (at the end) or updates the cells that changed."""
        if key not in self._cells:
            self._cells[key] = dict(cells)
            self._index[key] = len(self._order)
            self._order.append(key)
            for column, cell in cells.items():
                self._shown[(key, column)] = signature(cell)
            self._resize()
            self.refresh_lines(self._index[key] + 1)
            return
        row = self._cells[key]
        changed = False
        for column, cell in cells.items():
            mark = signature(cell)
            if self._shown.get((key, column)) != mark:
                self._shown[(key, column)] = mark
                row[column] = cell
                self._segments.pop((key, column), None)
                self.updates += 1
                changed = True
        if changed:
            self.refresh_lines(self._index[key] + 1)

    def remove_row(self, key: str) -> None:
        if key not in self._cells:
            return
        del self._cells[key]
        for column in self.columns:
            self._shown.pop((key, column.key), None)
            self._segments.pop((key, column.key), None)
        self._order.remove(key)
        self._reindex()
        self.cursor_row = min(self.cursor_row, max(0, len(self._order) - 1))
        self._resize()
        self.refresh()

    def reorder(self, keys: Sequence[str]) -> None:
        """Puts the rows in this order (every row key once); the cursor stays on its row."""
        if list(keys) == self._order:
            return
        selected = self.cursor_key
        self._order = list(keys)
        self._reindex()
        if selected is not None:
            self.cursor_row = self._index[selected]
        self.refresh()

    def forget_rendering(self) -> None:
        """Render every cell again (the theme changed)."""
        self._segments.clear()
        self._header = None
        self.refresh()

    def _reindex(self) -> None:
        self._index = {key: index for index, key in enumerate(self._order)}

    def _resize(self) -> None:
        width = sum(column.width + 2 for column in self.columns)
        self.virtual_size = Size(width, len(self._order) + 1)

    # -- rendering ----------------------------------------------------------------------------
    def _cell_segments(self, cell: Cell, width: int, style: Style) -> list[Segment]:
        text = cell if isinstance(cell, Text) else Text(cell)
        base = text.style if isinstance(text.style, Style) else Style.parse(text.style or "none")
        # Text.render leaves the text's own style to its caller: apply it under the spans.
        rendered = Segment.apply_style(text.render(self.app.console), base)
        segments = [Segment(" ", style)]
        segments += Strip(list(rendered)).crop_extend(0, width, None)
        segments.append(Segment(" ", style))
        return list(Segment.apply_style(segments, style))

    def _row_segments(self, key: str) -> tuple[list[Segment], list[Segment]]:
        fixed: list[Segment] = []
        rest: list[Segment] = []
        row = self._cells[key]
        bold = self.get_component_rich_style("grid--fixed", partial=True)
        for position, column in enumerate(self.columns):
            cached = self._segments.get((key, column.key))
            if cached is None:
                style = bold if position == 0 else Style()
                cached = self._cell_segments(row.get(column.key, ""), column.width, style)
                self._segments[(key, column.key)] = cached
            (fixed if position == 0 else rest).extend(cached)
        return fixed, rest

    def _header_segments(self) -> tuple[list[Segment], list[Segment]]:
        if self._header is None:
            self._header = []
            for column in self.columns:
                self._header += self._cell_segments(Text(column.label), column.width, Style())
        return _split(self._header, self.columns[0].width + 2)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        scroll_x, scroll_y = self.scroll_offset
        if y == 0:
            fixed, rest = self._header_segments()
            style = self.get_component_rich_style("grid--header")
        else:
            index = scroll_y + y - 1
            if index >= len(self._order):
                return Strip.blank(width, self.rich_style)
            key = self._order[index]
            fixed, rest = self._row_segments(key)
            style = self.rich_style
            if index % 2:
                style += self.get_component_rich_style("grid--odd-row")
            if index == self.cursor_row:
                style += self.get_component_rich_style("grid--cursor")
        fixed_width = self.columns[0].width + 2
        line = Strip(fixed + list(Strip(rest).crop(scroll_x, scroll_x + width - fixed_width)))
        return line.apply_style(style).crop_extend(0, width, style).simplify()

    # -- the cursor ---------------------------------------------------------------------------
    def watch_cursor_row(self, old: int, new: int) -> None:
        self.refresh_lines(old + 1)
        self.refresh_lines(new + 1)
        self._scroll_cursor_into_view()

    def _scroll_cursor_into_view(self) -> None:
        visible = max(1, self.size.height - 1)
        top = self.scroll_offset.y
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False, immediate=True)

    def move_cursor(self, *, row: int) -> None:
        if self._order:
            self.cursor_row = min(max(row, 0), len(self._order) - 1)

    def action_cursor(self, delta: int) -> None:
        self.move_cursor(row=self.cursor_row + delta)

    def action_page(self, direction: int) -> None:
        self.move_cursor(row=self.cursor_row + direction * max(1, self.size.height - 2))

    def action_edge(self, last: int) -> None:
        self.move_cursor(row=len(self._order) - 1 if last else 0)

    def action_select(self) -> None:
        key = self.cursor_key
        if key is not None:
            self.post_message(self.RowSelected(self, key))

    def on_click(self, event: events.Click) -> None:
        y = event.y
        if y == 0:
            column = self._column_at(event.x)
            if column is not None:
                self.post_message(self.HeaderSelected(self, column))
            return
        index = self.scroll_offset.y + y - 1
        if 0 <= index < len(self._order):
            self.cursor_row = index
            self.post_message(self.RowSelected(self, self._order[index]))

    def _column_at(self, x: int) -> str | None:
        first = self.columns[0].width + 2
        if x < first:
            return self.columns[0].key
        position = x - first + self.scroll_offset.x
        edge = 0
        for column in self.columns[1:]:
            edge += column.width + 2
            if position < edge:
                return column.key
        return None


def _split(segments: list[Segment], at: int) -> tuple[list[Segment], list[Segment]]:
    strip = Strip(segments)
    return list(strip.crop(0, at)), list(strip.crop(at))
