//! The library's folders depend on each other one way only, and no two files import each other in a
//! circle. Reads the `crate::` and `super::` paths of every source file (comments left out), so a new
//! import against the layering fails here with the file that made it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first: a folder may import only from its own layer's folder and from lower layers.
/// A new folder gets a line here (the simulator, `sim/`, will depend on none of the lab).
const LAYERS: &[(&str, u8)] = &[
    ("engine", 0),
    ("report", 1),
    ("probe", 2),
    ("node", 3),
    ("proof", 4),
    ("scenario", 5),
    ("bench", 5),
];

/// A source file of the library, as the module path it defines (`engine::lab`, `probe`, `report`).
type Module = String;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library source file (the binary's `main.rs` and `cmd/` sit on top of everything) and its module.
fn library_files() -> Vec<(PathBuf, Module)> {
    let mut out = Vec::new();
    let mut dirs = vec![src()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(src()).unwrap().to_path_buf();
            if rel == Path::new("cmd") || rel == Path::new("main.rs") || rel == Path::new("lib.rs")
            {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let s = rel.with_extension("").to_string_lossy().replace('/', "::");
                let module = s.strip_suffix("::mod").unwrap_or(&s).to_string();
                out.push((path, module));
            }
        }
    }
    out.sort();
    out
}

/// The text without `//` comments (doc comments included: a doc link is not a dependency).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            // Not inside a string such as "http://": good enough for this code base, which has none
            // next to an import.
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The items of a `{...}` group that `s` opens with (nested groups kept whole).
fn group_items(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut items) = (0, 1, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' | ',' if depth == 1 => {
                items.push(s[start..i].trim());
                start = i + 1;
                if c == '}' {
                    break;
                }
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
    items.retain(|i| !i.is_empty());
    items
}

/// The first two names of each path that follows `prefix::` (`crate::engine::lab::Lab` gives `engine`,
/// `lab`), groups expanded: `crate::engine::{lab::Lab, nat}` gives (`engine`, `lab`) and (`engine`, `nat`).
fn names_after<'a>(text: &'a str, prefix: &str) -> Vec<(&'a str, Option<&'a str>)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let firsts = if rest.starts_with('{') {
            group_items(rest)
        } else {
            vec![rest]
        };
        for path in firsts {
            let first = ident_at(path);
            if first.is_empty() {
                continue;
            }
            match path[first.len()..].strip_prefix("::") {
                Some(tail) if tail.starts_with('{') => {
                    for item in group_items(tail) {
                        out.push((first, Some(ident_at(item))));
                    }
                }
                Some(tail) => out.push((first, Some(ident_at(tail)))),
                None => out.push((first, None)),
            }
        }
    }
    out
}

/// The modules `module` (file `path`) imports, among `known`.
fn imports(path: &Path, module: &str, known: &BTreeSet<Module>) -> BTreeSet<Module> {
    let text = code(&std::fs::read_to_string(path).unwrap());
    let resolve = |first: &str, second: Option<&str>| -> Option<Module> {
        let two = second.map(|s| format!("{first}::{s}"));
        match two {
            Some(t) if known.contains(&t) => Some(t),
            _ => known.contains(first).then(|| first.to_string()),
        }
    };
    let mut out = BTreeSet::new();
    for (first, second) in names_after(&text, "crate::") {
        out.extend(resolve(first, second));
    }
    // `super::` outside the unit tests names a sibling (or the folder's mod.rs); inside them, the file.
    let is_mod_rs = path.file_name().is_some_and(|n| n == "mod.rs");
    let before_tests = text.split("#[cfg(test)]").next().unwrap_or("");
    if !is_mod_rs && let Some((folder, _)) = module.rsplit_once("::") {
        for (first, _) in names_after(before_tests, "super::") {
            let sibling = format!("{folder}::{first}");
            out.insert(if known.contains(&sibling) {
                sibling
            } else {
                folder.to_string()
            });
        }
    }
    out.remove(module);
    out
}

fn folder_of(module: &str) -> &str {
    module.split("::").next().unwrap()
}

fn layer(folder: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(f, _)| *f == folder)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| {
            panic!("src/{folder} is not in LAYERS (netlab/tests/layers.rs): say where it sits")
        })
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let files = library_files();
    let known: BTreeSet<Module> = files.iter().map(|(_, m)| m.clone()).collect();
    files
        .iter()
        .map(|(path, m)| (m.clone(), imports(path, m, &known)))
        .collect()
}

#[test]
fn folders_depend_one_way() {
    let mut wrong = Vec::new();
    for (from, tos) in graph() {
        for to in tos {
            let (a, b) = (folder_of(&from), folder_of(&to));
            if a != b && layer(b) >= layer(a) {
                wrong.push(format!("{from} imports {to}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering (engine < report < probe < node < proof < scenario, bench):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_file_imports_another_in_a_circle() {
    let g = graph();
    // Depth-first search; a grey node met again closes a circle.
    fn visit(
        m: &Module,
        g: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, u8>,
        stack: &mut Vec<Module>,
        circles: &mut Vec<String>,
    ) {
        state.insert(m.clone(), 1);
        stack.push(m.clone());
        for next in g.get(m).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                0 => visit(next, g, state, stack, circles),
                1 => {
                    let start = stack.iter().position(|s| s == next).unwrap();
                    let mut c = stack[start..].to_vec();
                    c.push(next.clone());
                    circles.push(c.join(" -> "));
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.clone(), 2);
    }
    let (mut state, mut circles) = (BTreeMap::new(), Vec::new());
    for m in g.keys() {
        if !state.contains_key(m) {
            visit(m, &g, &mut state, &mut Vec::new(), &mut circles);
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_reader_sees_imports_and_groups() {
    let text = code(
        "use crate::engine::{lab::{Host, Lab}, nat};\nuse crate::report::Table; // crate::probe\n\
         use crate::{node, scenario::file::Case};\nlet x = notcrate::y;",
    );
    assert_eq!(
        names_after(&text, "crate::"),
        [
            ("engine", Some("lab")),
            ("engine", Some("nat")),
            ("report", Some("Table")),
            ("node", None),
            ("scenario", Some("file"))
        ]
    );
    // The graph sees the engine's files and the folders' own imports.
    let g = graph();
    assert!(g["scenario::runner"].contains("scenario::file"), "{g:?}");
    assert!(g["scenario::runner"].contains("node"), "{g:?}");
    assert!(g["proof::classify"].contains("engine::lab"), "{g:?}");
    assert!(g["engine::lab"].contains("engine::wiring"), "{g:?}");
}
