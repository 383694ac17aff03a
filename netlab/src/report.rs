//! Report building blocks: a table rendered as Markdown or aligned text, and a grid of coloured cells
//! rendered as a self-contained SVG (the NAT matrix picture).

use std::fmt::Write as _;

use serde::Serialize;

/// A table with a header row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Table {
    /// Column titles.
    pub headers: Vec<String>,
    /// Rows; a short row is padded with empty cells.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles and no rows.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Table {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row.
    pub fn push<S: Into<String>>(&mut self, row: impl IntoIterator<Item = S>) {
        self.rows.push(row.into_iter().map(Into::into).collect());
    }

    fn width(&self) -> usize {
        self.rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0)
    }

    fn cell(row: &[String], i: usize) -> &str {
        row.get(i).map(String::as_str).unwrap_or("")
    }

    /// GitHub-flavoured Markdown; `|` and newlines in cells are escaped so the table never breaks.
    pub fn to_markdown(&self) -> String {
        let n = self.width();
        let esc = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let line = |row: &[String]| {
            let cells: Vec<String> = (0..n).map(|i| esc(Self::cell(row, i))).collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut out = line(&self.headers);
        out.push_str(&format!("|{}\n", "---|".repeat(n)));
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }

    /// Columns padded to equal width, for a terminal.
    pub fn to_text(&self) -> String {
        let n = self.width();
        let widths: Vec<usize> = (0..n)
            .map(|i| {
                self.rows
                    .iter()
                    .chain([&self.headers])
                    .map(|r| Self::cell(r, i).chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |row: &[String]| {
            let cells: Vec<String> = (0..n)
                .map(|i| format!("{:<w$}", Self::cell(row, i), w = widths[i]))
                .collect();
            format!("{}\n", cells.join("  ").trim_end())
        };
        let mut out = line(&self.headers);
        out.push_str(&format!(
            "{}\n",
            widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("  ")
        ));
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

/// The colour class of a grid cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CellClass {
    /// A direct connection.
    Direct,
    /// Connected through a relay.
    Relayed,
    /// No connection.
    Failed,
    /// Result differs from what was expected.
    Unexpected,
    /// Not measured or not applicable.
    Empty,
}

impl CellClass {
    /// CSS class name and fill colour.
    fn style(self) -> (&'static str, &'static str) {
        match self {
            CellClass::Direct => ("direct", "#2e9d5b"),
            CellClass::Relayed => ("relayed", "#e0a526"),
            CellClass::Failed => ("failed", "#c8453c"),
            CellClass::Unexpected => ("unexpected", "#7b3fb5"),
            CellClass::Empty => ("empty", "#d6d6d6"),
        }
    }

    const ALL: [CellClass; 5] = [
        CellClass::Direct,
        CellClass::Relayed,
        CellClass::Failed,
        CellClass::Unexpected,
        CellClass::Empty,
    ];
}

/// One cell of a [`Grid`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GridCell {
    /// Its colour.
    pub class: CellClass,
    /// Short text inside the cell (a time, "FAIL").
    pub text: String,
    /// Longer text shown on hover.
    pub tooltip: String,
}

impl GridCell {
    /// A cell with no tooltip.
    pub fn new(class: CellClass, text: impl Into<String>) -> GridCell {
        GridCell {
            class,
            text: text.into(),
            tooltip: String::new(),
        }
    }
}

/// Rows x columns of coloured cells with labels, e.g. NAT type x NAT type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grid {
    /// Caption above the grid.
    pub title: String,
    /// What the rows are (shown in the corner).
    pub row_axis: String,
    /// What the columns are.
    pub column_axis: String,
    /// Row labels.
    pub rows: Vec<String>,
    /// Column labels.
    pub columns: Vec<String>,
    /// `cells[row][column]`; missing cells are drawn empty.
    pub cells: Vec<Vec<GridCell>>,
}

/// Size of one cell in the picture.
const CELL_W: usize = 112;
const CELL_H: usize = 44;
const LABEL_W: usize = 150;
const HEADER_H: usize = 44;
const TITLE_H: usize = 32;
const LEGEND_H: usize = 34;

fn xml_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

impl Grid {
    /// A standalone SVG document.
    pub fn to_svg(&self) -> String {
        let (nr, nc) = (self.rows.len(), self.columns.len());
        let width = LABEL_W + nc.max(1) * CELL_W + 10;
        let height = TITLE_H + HEADER_H + nr * CELL_H + LEGEND_H + 10;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">"#
        );
        s.push_str("<style>");
        for class in CellClass::ALL {
            let (name, fill) = class.style();
            let _ = write!(s, ".{name}{{fill:{fill}}}");
        }
        s.push_str(".label{fill:#222}.cell-text{fill:#fff;font-weight:bold}.empty-text{fill:#444}</style>\n");
        let _ = writeln!(
            s,
            r##"<rect width="{width}" height="{height}" fill="#fff"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="8" y="21" font-size="16" font-weight="bold" class="label">{}</text>"#,
            xml_escape(&self.title)
        );
        let top = TITLE_H;
        let _ = writeln!(
            s,
            r#"<text x="8" y="{}" class="label">{} ↓ / {} →</text>"#,
            top + HEADER_H / 2 + 5,
            xml_escape(&self.row_axis),
            xml_escape(&self.column_axis)
        );
        for (j, col) in self.columns.iter().enumerate() {
            let x = LABEL_W + j * CELL_W + CELL_W / 2;
            let _ = writeln!(
                s,
                r#"<text x="{x}" y="{}" text-anchor="middle" class="label">{}</text>"#,
                top + HEADER_H / 2 + 5,
                xml_escape(col)
            );
        }
        for (i, row) in self.rows.iter().enumerate() {
            let y = top + HEADER_H + i * CELL_H;
            let _ = writeln!(
                s,
                r#"<text x="8" y="{}" class="label">{}</text>"#,
                y + CELL_H / 2 + 5,
                xml_escape(row)
            );
            for j in 0..nc {
                let empty = GridCell::new(CellClass::Empty, "");
                let cell = self.cells.get(i).and_then(|r| r.get(j)).unwrap_or(&empty);
                let (name, _) = cell.class.style();
                let x = LABEL_W + j * CELL_W;
                let _ = write!(
                    s,
                    r#"<g><rect x="{}" y="{}" width="{}" height="{}" rx="4" class="{name}"/>"#,
                    x + 2,
                    y + 2,
                    CELL_W - 4,
                    CELL_H - 4
                );
                if !cell.tooltip.is_empty() {
                    let _ = write!(s, "<title>{}</title>", xml_escape(&cell.tooltip));
                }
                let text_class = if cell.class == CellClass::Empty {
                    "empty-text"
                } else {
                    "cell-text"
                };
                let _ = writeln!(
                    s,
                    r#"<text x="{}" y="{}" text-anchor="middle" class="{text_class}">{}</text></g>"#,
                    x + CELL_W / 2,
                    y + CELL_H / 2 + 5,
                    xml_escape(&cell.text)
                );
            }
        }
        let ly = top + HEADER_H + nr * CELL_H + 12;
        let mut lx = 8;
        for class in CellClass::ALL {
            let (name, _) = class.style();
            let _ = writeln!(
                s,
                r#"<rect x="{lx}" y="{ly}" width="14" height="14" class="{name}"/><text x="{}" y="{}" class="label">{name}</text>"#,
                lx + 18,
                ly + 12
            );
            lx += 26 + name.len() * 8;
        }
        s.push_str("</svg>\n");
        s
    }

    /// The same grid as a Markdown table.
    pub fn to_markdown(&self) -> String {
        let mut t = Table::new(
            std::iter::once(format!("{} \\ {}", self.row_axis, self.column_axis))
                .chain(self.columns.clone()),
        );
        for (i, row) in self.rows.iter().enumerate() {
            let cells = self
                .cells
                .get(i)
                .map(|r| r.iter().map(|c| c.text.clone()).collect())
                .unwrap_or_else(Vec::new);
            t.push(std::iter::once(row.clone()).chain(cells));
        }
        t.to_markdown()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        let mut t = Table::new(["preset", "mapping"]);
        t.push(["full-cone", "EIM"]);
        t.push(["a|b"]);
        t
    }

    #[test]
    fn markdown_table() {
        assert_eq!(
            table().to_markdown(),
            "| preset | mapping |\n|---|---|\n| full-cone | EIM |\n| a\\|b |  |\n"
        );
    }

    #[test]
    fn text_table_is_aligned() {
        let text = table().to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "preset     mapping");
        assert_eq!(lines[1], "---------  -------");
        assert_eq!(lines[2], "full-cone  EIM");
        assert_eq!(lines[3], "a|b");
    }

    fn grid() -> Grid {
        Grid {
            title: "Punch <matrix>".into(),
            row_axis: "A".into(),
            column_axis: "B".into(),
            rows: vec!["full-cone".into(), "symmetric".into()],
            columns: vec!["full-cone".into(), "symmetric".into()],
            cells: vec![
                vec![
                    GridCell::new(CellClass::Direct, "12 ms"),
                    GridCell::new(CellClass::Direct, "40 ms"),
                ],
                vec![GridCell {
                    class: CellClass::Failed,
                    text: "FAIL".into(),
                    tooltip: "a & b".into(),
                }],
            ],
        }
    }

    #[test]
    fn svg_grid_has_every_cell_coloured_and_escaped() {
        let svg = grid().to_svg();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("Punch &lt;matrix&gt;"));
        assert!(svg.contains("<title>a &amp; b</title>"));
        // 3 given cells + 1 missing cell drawn empty, plus the legend's 5 swatches.
        assert_eq!(svg.matches(r#"rx="4" class=""#).count(), 4);
        assert_eq!(svg.matches(r#"class="direct""#).count(), 3);
        assert_eq!(svg.matches(r#"class="failed""#).count(), 2);
        assert_eq!(svg.matches(r#"class="empty""#).count(), 2);
        assert!(svg.contains(">12 ms</text>"));
        // Well-formed enough for an XML parser: tags balance.
        assert_eq!(svg.matches("<g>").count(), svg.matches("</g>").count());
    }

    #[test]
    fn grid_as_markdown() {
        let md = grid().to_markdown();
        assert!(
            md.starts_with("| A \\ B | full-cone | symmetric |\n"),
            "{md}"
        );
        assert!(md.contains("| symmetric | FAIL |  |"), "{md}");
    }
}
