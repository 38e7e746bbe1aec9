"""Asset metadata as tables, so on-call triages in the Dagster UI without a terminal.

The UI renders a table metadata value as a table with typed columns (a Markdown table is only
text). The JSON entries next to them stay: the verdict is read back from those.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import dagster as dg

Column = tuple[str, str, str]  # name, type ("string", "int", "float", "bool"), description


def table(columns: Sequence[Column], rows: Iterable[Mapping]) -> dg.TableMetadataValue:
    """One record per row, keyed by the column names; a key missing from a row is empty."""
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, kind, description=about) for name, kind, about in columns]
    )
    records = [dg.TableRecord({name: row.get(name) for name, _, _ in columns}) for row in rows]
    return dg.MetadataValue.table(records, schema)
