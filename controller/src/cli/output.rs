//! How the CLI prints: one JSON document per command (`--output json`),
//! one JSON object per line for streams (`watch`, `logs -f`), and aligned
//! tables declared once as columns. Knows nothing of the API or of clap.

use super::Output;
use serde_json::Value;
use std::io::Write;

/// Prints a document as pretty JSON: scripts read the whole of stdout as one.
pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Writes one object as one line and flushes it, so a reader of a stream
/// (`watch`, `logs -f`) sees each event as it happens.
pub fn write_json_line(out: &mut impl Write, v: &Value) {
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

impl Output {
    /// Prints a command's reply: the document itself under `--output json`,
    /// else the prose `prose` makes of it.
    pub fn print(self, reply: &Value, prose: impl FnOnce(&Value) -> String) {
        print!("{}", self.render(reply, prose));
    }

    /// What [`Output::print`] prints.
    pub fn render(self, reply: &Value, prose: impl FnOnce(&Value) -> String) -> String {
        match self {
            Output::Json => format!("{}\n", serde_json::to_string_pretty(reply).unwrap_or_default()),
            Output::Table => prose(reply),
        }
    }

    pub fn is_json(self) -> bool {
        self == Output::Json
    }
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The items of a JSON array field (none when it is missing).
pub fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// A map of labels as one cell: `k=v,k2=v2`.
pub fn labels(v: &Value) -> String {
    v.as_object().map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect::<Vec<_>>().join(",")).unwrap_or_default()
}

/// A row of the tables that list actions: the action and its stage.
pub struct StageAction<'a> {
    pub stage: &'a Value,
    pub action: &'a Value,
}

/// Every action of `stages` (its array field `actions`), in order.
pub fn stage_actions<'a>(stages: &'a Value, actions: &str) -> Vec<StageAction<'a>> {
    items(stages).flat_map(|stage| items(&stage[actions]).map(move |action| StageAction { stage, action })).collect()
}

/// One column of a table: its header and how a row makes its cell.
pub struct Column<T> {
    pub header: &'static str,
    pub cell: fn(&T) -> String,
}

/// A table declared by its columns; every listing of the CLI prints
/// through one, so they all align the same way.
pub struct Table<T> {
    columns: Vec<Column<T>>,
}

/// Declares a table by its columns: `columns![Value; ("NAME", |p| s(&p["name"])), ...]`.
macro_rules! columns {
    ($row:ty; $(($header:expr, $cell:expr)),* $(,)?) => {
        $crate::cli::output::Table::<$row>::new(vec![
            $($crate::cli::output::Column::<$row> { header: $header, cell: $cell }),*
        ])
    };
}
pub(crate) use columns;

impl<T> Table<T> {
    pub fn new(columns: Vec<Column<T>>) -> Self {
        Self { columns }
    }

    /// The table as text: the header, then one line per row.
    pub fn render<'r>(&self, rows: impl IntoIterator<Item = &'r T>) -> String
    where
        T: 'r,
    {
        let cells: Vec<Vec<String>> =
            rows.into_iter().map(|row| self.columns.iter().map(|c| (c.cell)(row)).collect()).collect();
        let header: Vec<&str> = self.columns.iter().map(|c| c.header).collect();
        render_rows(&header, &cells)
    }

    pub fn print<'r>(&self, rows: impl IntoIterator<Item = &'r T>)
    where
        T: 'r,
    {
        print!("{}", self.render(rows));
    }
}

/// Prints rows of ready cells as aligned columns under a header (for
/// callers that build their cells themselves, like the demo).
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", render_rows(header, rows));
}

/// Aligns cells in columns two spaces apart; the last column is not
/// padded and no line ends in spaces.
fn render_rows(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        text.push_str(s.trim_end());
        text.push('\n');
    };
    line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for row in rows {
        line(row);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_table_aligns_its_columns_and_trims_the_last() {
        let table =
            columns![Value; ("NAME", |p| s(&p["name"])), ("VERSION", |p| s(&p["version"])), ("NOTE", |p| s(&p["note"]))];
        let rows = [json!({"name": "web", "version": 12, "note": "x"}), json!({"name": "deploy-all", "version": 1})];
        assert_eq!(table.render(&rows), "NAME        VERSION  NOTE\nweb         12       x\ndeploy-all  1        -\n");
        assert_eq!(table.render(&[]), "NAME  VERSION  NOTE\n");
    }

    #[test]
    fn cells_are_measured_in_characters_not_bytes() {
        let table = columns![Value; ("A", |p| s(&p["a"])), ("B", |p| s(&p["b"]))];
        let rows = [json!({"a": "é", "b": "1"}), json!({"a": "ab", "b": ""})];
        assert_eq!(table.render(&rows), "A   B\né   1\nab\n");
    }

    #[test]
    fn a_json_line_is_one_line() {
        let mut out = Vec::new();
        write_json_line(&mut out, &json!({"type": "stage", "message": "two\nlines"}));
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["message"], "two\nlines");
    }
}
