//! Imports inside every library crate run one way: no module imports a module that imports it
//! back, directly or through others. A crate whose modules import each other in a circle cannot
//! be read top-down (`event.rs` → `state.rs` → `future.rs` → `service.rs` → `layer.rs` →
//! `lib.rs`, as the circuit-breaker and bulkhead crates are built), and every change to one of
//! its modules can touch all the others.
//!
//! The test reads the crates' sources. A file is a module (its path under `src/`); `lib.rs` and
//! `mod.rs` only gather and re-export, so they are not modules here. Module A imports module B
//! when a `use` or a path in A names B: `crate::b::..`, `super::b`, `self::b`, or a name that
//! `lib.rs` or a `mod.rs` re-exports from B. Comments, strings and the `#[cfg(test)] mod` at
//! the end of a file are left out. A circle is a strongly connected set of two or more modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Circles that were there before this test, each to be removed by moving shared state into
/// `state.rs` and events into `event.rs` (the structural part of "one house, one shape"). The
/// test fails on any circle not listed here, and on a listed one that is gone, so that this
/// list only shrinks; it is empty now, and stays so.
const KNOWN: [&str; 0] = [];

#[test]
fn no_library_crate_has_a_new_module_import_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    let mut crates = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
        let src = dir.join("src");
        if !src.join("lib.rs").is_file() || name == "benches" || name == "examples" {
            continue;
        }
        crates += 1;
        for circle in circles(&sources(&src)) {
            found.push(format!("{name}: {circle}"));
        }
    }
    assert!(crates >= 10, "read {crates} library crates under {root:?}");

    let new: Vec<_> = found
        .iter()
        .filter(|c| !KNOWN.contains(&c.as_str()))
        .collect();
    let gone: Vec<_> = KNOWN
        .iter()
        .filter(|c| !found.contains(&c.to_string()))
        .collect();
    assert!(
        new.is_empty(),
        "modules that import each other in a circle (move shared state into `state.rs` and \
         events into `event.rs`, so that imports run one way): {new:#?}"
    );
    assert!(
        gone.is_empty(),
        "circles that are gone: remove them from `KNOWN` in this test: {gone:#?}"
    );
}

/// Every `.rs` file under `src`, by its path relative to `src` (`/`-separated).
fn sources(src: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(src).unwrap();
                let key = relative
                    .components()
                    .map(|c| c.as_os_str().to_str().unwrap())
                    .collect::<Vec<_>>()
                    .join("/");
                files.insert(key, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    files
}

type ModPath = Vec<String>;

/// The module path of a file: `policy/http.rs` is `[policy, http]`, `policy/mod.rs` and
/// `lib.rs` are their folder's.
fn mod_path(file: &str) -> ModPath {
    let mut path: ModPath = file
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if matches!(path.last().map(String::as_str), Some("lib" | "mod")) {
        path.pop();
    }
    path
}

/// The import circles among the modules of one crate, each as its files joined by ` <-> `.
fn circles(files: &BTreeMap<String, String>) -> Vec<String> {
    let modules: BTreeMap<ModPath, String> = files
        .iter()
        .map(|(file, text)| (mod_path(file), code_only(text)))
        .collect();
    let nodes: BTreeSet<ModPath> = files
        .keys()
        .filter(|f| !f.ends_with("lib.rs") && !f.ends_with("mod.rs"))
        .map(|f| mod_path(f))
        .collect();

    // (module, name) -> the module that defines what `use self::a::b::Name` re-exports.
    let mut reexports: BTreeMap<(ModPath, String), ModPath> = BTreeMap::new();
    for (module, text) in &modules {
        for path in use_paths(text) {
            if path.len() >= 3 && path[0] == "self" {
                let mut target = module.clone();
                target.extend(path[1..path.len() - 1].iter().cloned());
                reexports.insert((module.clone(), path[path.len() - 1].clone()), target);
            }
        }
    }

    let resolve = |current: &ModPath, path: &[String]| -> Option<ModPath> {
        let (mut base, mut rest): (ModPath, &[String]) = match path[0].as_str() {
            "crate" => (Vec::new(), &path[1..]),
            "super" => (
                current[..current.len().saturating_sub(1)].to_vec(),
                &path[1..],
            ),
            _ => (current.clone(), &path[1..]),
        };
        if path[0] == "super" {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        for k in (1..=rest.len()).rev() {
            let mut candidate = base.clone();
            candidate.extend(rest[..k].iter().cloned());
            if nodes.contains(&candidate) {
                return Some(candidate);
            }
            if modules.contains_key(&candidate) && k < rest.len() {
                let target = reexports.get(&(candidate, rest[k].clone()));
                if let Some(target) = target.filter(|t| nodes.contains(*t)) {
                    return Some(target.clone());
                }
            }
        }
        let first = rest.first()?;
        reexports
            .get(&(base, first.clone()))
            .filter(|t| nodes.contains(*t))
            .cloned()
    };

    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for module in &nodes {
        let text = &modules[module];
        let mut paths = use_paths(text);
        paths.extend(relative_paths(text));
        let targets = edges.entry(module.clone()).or_default();
        for path in paths {
            if !matches!(path[0].as_str(), "crate" | "super" | "self") {
                continue;
            }
            if let Some(target) = resolve(module, &path) {
                let inside = target.len() > module.len() && target.starts_with(module);
                if target != *module && !inside {
                    targets.insert(target);
                }
            }
        }
    }

    strongly_connected(&nodes, &edges)
        .into_iter()
        .filter(|component| component.len() > 1)
        .map(|component| {
            let mut files: Vec<String> = component.iter().map(|m| m.join("/") + ".rs").collect();
            files.sort();
            files.join(" <-> ")
        })
        .collect()
}

/// `text` without comments, with every string and character literal emptied, and cut before
/// the first `#[cfg(test)] mod name {` (the tests at the end of a file).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r'
            && matches!(next, Some('"' | '#'))
            && !chars[..i]
                .last()
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // A raw string: r"..", r#".."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|h| chars.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && next == Some('\\') {
            // A character literal with an escape: '\n', '\'', '\u{..}'.
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    match find_test_module(&out) {
        Some(at) => out[..at].to_owned(),
        None => out,
    }
}

/// Where `#[cfg(test)]` followed by `mod name {` starts, if anywhere.
fn find_test_module(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(offset) = text[from..].find("#[cfg(test)]") {
        let at = from + offset;
        let rest = text[at + "#[cfg(test)]".len()..].trim_start();
        if let Some(rest) = rest.strip_prefix("mod") {
            let after = rest.trim_start();
            let ident_len = after
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if rest.starts_with(char::is_whitespace)
                && ident_len > 0
                && after[ident_len..].trim_start().starts_with('{')
            {
                return Some(at);
            }
        }
        from = at + 1;
    }
    None
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every path a `use` item names, its tree expanded: `use crate::a::{b, c::D};` gives
/// `crate::a::b` and `crate::a::c::D`.
fn use_paths(text: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut from = 0;
    while let Some(offset) = text[from..].find("use") {
        let at = from + offset;
        from = at + 3;
        let before_ok = !text[..at].chars().next_back().is_some_and(is_word);
        let after_ok = text[at + 3..].starts_with(char::is_whitespace);
        if !(before_ok && after_ok) {
            continue;
        }
        let Some(end) = text[at..].find(';') else {
            break;
        };
        let tree = &text[at + 3..at + end];
        for path in expand(&strip_renames(tree)) {
            let segments: Vec<String> = path
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if !segments.is_empty() {
                paths.push(segments);
            }
        }
        from = at + end;
    }
    paths
}

/// A use tree without its renames (`a as b`) and whitespace.
fn strip_renames(tree: &str) -> String {
    let words: Vec<&str> = tree.split_whitespace().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < words.len() {
        if words[i] == "as" && i + 1 < words.len() {
            // Keep what follows the alias (`,` or `}`), drop the alias itself.
            let alias = words[i + 1];
            let tail = alias.trim_start_matches(is_word);
            out.push_str(tail);
            i += 2;
        } else {
            out.push_str(words[i]);
            i += 1;
        }
    }
    out
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let (Some(open), Some(close)) = (tree.find('{'), tree.rfind('}')) else {
        return vec![tree.replace('{', "")];
    };
    let (head, body) = (&tree[..open], &tree[open + 1..close]);
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in body.chars() {
        match c {
            ',' if depth == 0 => parts.push(std::mem::take(&mut current)),
            '{' => {
                depth += 1;
                current.push(c);
            }
            '}' => {
                depth -= 1;
                current.push(c);
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
        .iter()
        .flat_map(|part| expand(part))
        .map(|path| format!("{head}{path}"))
        .collect()
}

/// Every path in `text` that starts with `crate::`, `super::` or `self::`.
fn relative_paths(text: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for root in ["crate", "super", "self"] {
        let mut from = 0;
        while let Some(offset) = text[from..].find(root) {
            let at = from + offset;
            from = at + root.len();
            if text[..at].chars().next_back().is_some_and(is_word) {
                continue;
            }
            let mut segments = vec![root.to_owned()];
            let mut rest = &text[at + root.len()..];
            while let Some(after) = rest.strip_prefix("::") {
                let len = after.find(|c: char| !is_word(c)).unwrap_or(after.len());
                if len == 0 {
                    break;
                }
                segments.push(after[..len].to_owned());
                rest = &after[len..];
            }
            if segments.len() > 1 {
                paths.push(segments);
            }
        }
    }
    paths
}

/// Tarjan's strongly connected components.
fn strongly_connected(
    nodes: &BTreeSet<ModPath>,
    edges: &BTreeMap<ModPath, BTreeSet<ModPath>>,
) -> Vec<Vec<ModPath>> {
    struct Search<'a> {
        edges: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<ModPath, usize>,
        low: BTreeMap<ModPath, usize>,
        stack: Vec<ModPath>,
        on_stack: BTreeSet<ModPath>,
        components: Vec<Vec<ModPath>>,
    }

    impl Search<'_> {
        fn visit(&mut self, v: &ModPath) {
            let n = self.index.len();
            self.index.insert(v.clone(), n);
            self.low.insert(v.clone(), n);
            self.stack.push(v.clone());
            self.on_stack.insert(v.clone());
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v.clone(), low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v.clone(), low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(&w);
                    let done = w == *v;
                    component.push(w);
                    if done {
                        break;
                    }
                }
                self.components.push(component);
            }
        }
    }

    let mut search = Search {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for v in nodes {
        if !search.index.contains_key(v) {
            search.visit(v);
        }
    }
    search.components
}

// ===== the checker's own tests =====

fn crate_of(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(path, text)| (path.to_string(), text.to_string()))
        .collect()
}

#[test]
fn a_service_and_layer_that_import_each_other_are_a_circle() {
    let files = crate_of(&[
        (
            "lib.rs",
            "mod layer;\nmod service;\npub use self::layer::Layer;",
        ),
        ("layer.rs", "use crate::service::Shared;\npub struct Layer;"),
        ("service.rs", "use super::layer::Layer;\npub struct Shared;"),
    ]);
    assert_eq!(circles(&files), ["layer.rs <-> service.rs"]);
}

#[test]
fn imports_that_run_one_way_are_no_circle() {
    let files = crate_of(&[
        (
            "lib.rs",
            "mod event;\nmod state;\nmod future;\nmod service;\nmod layer;",
        ),
        ("event.rs", "pub struct RejectedEvent;"),
        ("state.rs", "use crate::event::RejectedEvent;"),
        ("future.rs", "use crate::state::Shared;"),
        (
            "service.rs",
            "use crate::{future::ResponseFuture, state::Shared};",
        ),
        (
            "layer.rs",
            "use crate::service::Service;\nuse crate::state::Shared;",
        ),
    ]);
    assert!(circles(&files).is_empty());
}

#[test]
fn a_name_reexported_by_lib_leads_to_its_module() {
    let files = crate_of(&[
        (
            "lib.rs",
            "mod a;\nmod b;\npub use self::b::{Thing as Other, More};",
        ),
        ("a.rs", "fn f() -> crate::More { todo!() }"),
        ("b.rs", "use crate::a;"),
    ]);
    assert_eq!(circles(&files), ["a.rs <-> b.rs"]);
}

#[test]
fn a_three_module_circle_through_nested_modules_is_found() {
    let files = crate_of(&[
        ("lib.rs", "mod classify;"),
        ("classify/mod.rs", "mod body;\nmod grpc;\nmod http;"),
        ("classify/body.rs", "use super::grpc::Codes;"),
        ("classify/grpc.rs", "use super::http::Status;"),
        ("classify/http.rs", "use crate::classify::body::Body;"),
    ]);
    assert_eq!(
        circles(&files),
        ["classify/body.rs <-> classify/grpc.rs <-> classify/http.rs"]
    );
}

#[test]
fn comments_strings_and_tests_do_not_count() {
    let files = crate_of(&[
        ("lib.rs", "mod a;\nmod b;"),
        (
            "a.rs",
            "// use crate::b;\n/* crate::b::X */\nconst S: &str = \"crate::b::X\";\nconst R: &str = r#\"use crate::b;\"#;\nconst C: char = '\"';\nuse crate::b::Y;",
        ),
        (
            "b.rs",
            "pub struct Y;\n#[cfg(test)]\nmod tests {\n    use crate::a;\n}",
        ),
    ]);
    assert!(circles(&files).is_empty(), "{:?}", circles(&files));
}
