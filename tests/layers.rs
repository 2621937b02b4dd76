//! The crate's structure, checked from its source: every import of a `src/` file
//! goes down the layers of `ARCHITECTURE.md` (never up), and no two files of `src/`
//! import each other, directly or through others.
//!
//! The layers, from the bottom: `domain` (the model: events, state, specs, progress)
//! and `config`; `store`, `train`, `auth` (the tokens file), `telemetry` and
//! `instruments`, which see only the bottom, and `slurm` (the Slurm wire: commands,
//! shared files, worker facts), which also sees `store` (facts carry the journal's
//! encoding); `actors`, which see those; `http`, which sees `actors` and below;
//! `startup`, which wires them all, and `worker` (`runyard worker`, a server of its
//! own on a compute node) above it; and `cli`, whose client commands see only the
//! HTTP client (`cli::client`) and the bottom, and whose server-side commands see
//! `worker`, `startup` and below.
//!
//! Imports are read as text: `use` trees (braces expanded) and `crate::`/`super::`
//! paths anywhere in code, with comments and string literals left out. An import
//! names the deepest module file its path reaches.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each part of the crate may import (by the first segments of the module
/// path), besides itself. The longest matching prefix decides.
fn rules() -> Vec<(&'static str, Vec<&'static str>)> {
    let bottom = vec!["domain", "config"];
    let beside_store = ["store", "train", "auth", "telemetry", "instruments"];
    let infra = [bottom.clone(), beside_store.to_vec(), vec!["slurm"]].concat();
    let below_http = [infra.clone(), vec!["actors"]].concat();
    let below_startup = [below_http.clone(), vec!["http"]].concat();
    let mut rules: Vec<(&'static str, Vec<&'static str>)> = vec![
        ("domain", vec![]),
        ("config", vec![]),
        ("slurm", [bottom.clone(), vec!["store"]].concat()),
        ("actors", infra),
        ("http", below_http),
        ("startup", below_startup.clone()),
        ("worker", [below_startup, vec!["startup"]].concat()),
        ("cli::client", vec!["domain", "cli::client"]),
        (
            "cli",
            [
                bottom.clone(),
                vec!["store", "slurm", "auth", "telemetry", "startup", "worker"],
            ]
            .concat(),
        ),
    ];
    rules.extend(beside_store.iter().map(|part| (*part, bottom.clone())));
    rules
}

/// Imports against the layers that `main` still has, each to be removed (and then
/// from this list: an entry that no longer holds fails the test too).
const KNOWN_UPWARD: &[&str] = &[];

/// Files in import cycles that `main` still has, as each cycle's first file (in
/// module order) and its size; to be removed like [`KNOWN_UPWARD`].
const KNOWN_CYCLES: &[&str] = &[];

/// Fails on what `found` has that `known` does not (new), and on what `known` has
/// that `found` does not (fixed: take it off the list).
fn ratchet(what: &str, found: &BTreeSet<String>, known: &[&str], details: &str) {
    let known: BTreeSet<String> = known.iter().map(|s| s.to_string()).collect();
    let new: Vec<_> = found.difference(&known).collect();
    let fixed: Vec<_> = known.difference(found).collect();
    assert!(new.is_empty(), "new {what}: {new:?}\n{details}");
    assert!(
        fixed.is_empty(),
        "{what} no longer found (take them off the list): {fixed:?}"
    );
}

/// A module path, as its segments (`["actors", "journal"]`).
type ModPath = Vec<String>;

struct Crate {
    /// Every module that has a file, and the file.
    files: BTreeMap<ModPath, PathBuf>,
    /// What each module re-exports (`pub use`): the name, and the absolute path it
    /// stands for.
    reexports: BTreeMap<ModPath, BTreeMap<String, ModPath>>,
}

impl Crate {
    fn read(src: &Path) -> Self {
        let mut files = BTreeMap::new();
        let mut stack = vec![src.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read a directory of src/") {
                let path = entry.expect("a directory entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    if let Some(module) = module_of(src, &path) {
                        files.insert(module, path);
                    }
                }
            }
        }
        let mut krate = Self {
            files,
            reexports: BTreeMap::new(),
        };
        let mut reexports = BTreeMap::new();
        for (module, file) in &krate.files {
            let source = std::fs::read_to_string(file).expect("read a source file");
            let code = inline_modules_resolved(&without_test_modules(&code_only(&source)));
            let mut names = BTreeMap::new();
            for tree in pub_use_trees(&code) {
                for (path, seen_as) in expand_use_named(&tree) {
                    if let Some(target) = absolute(&krate, module, &path) {
                        names.insert(seen_as, target);
                    }
                }
            }
            reexports.insert(module.clone(), names);
        }
        krate.reexports = reexports;
        krate
    }

    /// The module file that defines what `path` (absolute, from the crate root)
    /// names: the deepest module with a file on the path, followed through its
    /// re-exports.
    fn file_of(&self, path: &[String]) -> Option<&ModPath> {
        let mut path = path.to_vec();
        for _ in 0..16 {
            let n = (1..=path.len())
                .rev()
                .find(|n| self.files.contains_key(&path[..*n]))?;
            let through = path
                .get(n)
                .and_then(|name| self.reexports.get(&path[..n])?.get(name));
            match through {
                Some(target) if *target != path[..=n] => {
                    let mut next = target.clone();
                    next.extend_from_slice(&path[n + 1..]);
                    path = next;
                }
                _ => return self.files.get_key_value(&path[..n]).map(|(k, _)| k),
            }
        }
        None
    }

    fn is_module(&self, path: &[String]) -> bool {
        self.files.contains_key(path)
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are module `a::b`; `lib.rs` is the root (left
/// out: it only declares the modules); `main.rs` is the binary, not the crate.
fn module_of(src: &Path, file: &Path) -> Option<ModPath> {
    let relative = file.strip_prefix(src).ok()?.with_extension("");
    let mut segments: ModPath = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if segments.last().is_some_and(|s| s == "mod") {
        segments.pop();
    }
    match segments.as_slice() {
        [only] if only == "lib" || only == "main" => None,
        _ => Some(segments),
    }
}

/// The source with comments, string and char literals blanked out.
fn code_only(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &source[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').map_or(source.len(), |n| i + n);
            i = end;
        } else if rest.starts_with("/*") {
            let mut depth = 0;
            let mut j = i;
            while j < bytes.len() {
                if source[j..].starts_with("/*") {
                    depth += 1;
                    j += 2;
                } else if source[j..].starts_with("*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            out.push(' ');
            i = j;
        } else if let Some(len) = raw_string_len(rest) {
            out.push_str("\"\"");
            i += len;
        } else if bytes[i] == b'"' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            i = j + 1;
        } else if bytes[i] == b'\'' && char_literal_len(rest).is_some() {
            out.push_str("' '");
            i += char_literal_len(rest).unwrap_or(1);
        } else {
            let c = rest.chars().next().expect("a character");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The length of a raw string literal (`r"…"`, `r#"…"#`, `br"…"`) at the start.
fn raw_string_len(s: &str) -> Option<usize> {
    let body = s.strip_prefix("br").or_else(|| s.strip_prefix('r'))?;
    let hashes = body.len() - body.trim_start_matches('#').len();
    let after = body[hashes..].strip_prefix('"')?;
    let close = format!("\"{}", "#".repeat(hashes));
    let end = after.find(&close)?;
    Some(s.len() - after.len() + end + close.len())
}

/// The length of a char literal (`'a'`, `'\n'`, `'\''`) at the start, and not a
/// lifetime.
fn char_literal_len(s: &str) -> Option<usize> {
    let mut chars = s.char_indices().skip(1);
    let (_, first) = chars.next()?;
    if first == '\\' {
        let close = s.get(3..)?.find('\'')?;
        return Some(close + 4);
    }
    let (at, second) = chars.next()?;
    (second == '\'').then_some(at + 1)
}

/// The code without its `#[cfg(test)] mod … { … }` blocks (their `super` is the file
/// itself, and what a file's tests use is not part of its structure).
fn without_test_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        let is_module = after.starts_with("mod ") || after.starts_with("pub mod ");
        let open = after.find('{');
        let semicolon = after.find(';');
        match (is_module, open) {
            (true, Some(open)) if semicolon.is_none_or(|s| s > open) => {
                out.push_str(&rest[..at]);
                let mut depth = 0;
                let mut end = after.len();
                for (i, c) in after.char_indices().skip(open) {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            _ => {
                let skip = at + "#[cfg(test)]".len();
                out.push_str(&rest[..skip]);
                rest = &rest[skip..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The code with `super::` inside an inline `mod name { … }` read as the file's own
/// scope (`self::`), which it is.
fn inline_modules_resolved(code: &str) -> String {
    let mut out = code.to_string();
    let mut from = 0;
    while let Some(at) = find_word(&out[from..], "mod").map(|n| n + from) {
        let after = &out[at + 3..];
        let name_len = after
            .trim_start()
            .find(|c: char| !(c.is_alphanumeric() || c == '_'));
        let open = after.find('{');
        let semicolon = after.find(';');
        from = at + 3;
        let (Some(_), Some(open)) = (name_len, open) else {
            continue;
        };
        if semicolon.is_some_and(|s| s < open) {
            continue;
        }
        let start = at + 3 + open;
        let mut depth = 0;
        let mut end = out.len();
        for (i, c) in out[start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = start + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let inner = out[start..end].replace("super::", "self::");
        out.replace_range(start..end, &inner);
        from = start;
    }
    out
}

/// Expands a `use` tree (`a::{b, c::{d, e as f}, self}`) into whole paths.
fn expand_use(tree: &str) -> Vec<Vec<String>> {
    expand_use_named(tree)
        .into_iter()
        .map(|(path, _)| path)
        .collect()
}

/// [`expand_use`], with the name each path is seen by (its alias, or its last
/// segment).
fn expand_use_named(tree: &str) -> Vec<(Vec<String>, String)> {
    fn walk(tree: &str, prefix: &[String], out: &mut Vec<(Vec<String>, String)>) {
        let tree = tree.trim();
        if let Some(open) = tree.find('{') {
            let head: Vec<String> = split_path(&tree[..open]);
            let close = tree.rfind('}').unwrap_or(tree.len());
            let mut base = prefix.to_vec();
            base.extend(head);
            for part in split_top_level(&tree[open + 1..close]) {
                walk(part, &base, out);
            }
        } else {
            let mut parts = tree.split(" as ");
            let name = parts.next().unwrap_or(tree);
            let mut path = prefix.to_vec();
            path.extend(split_path(name).into_iter().filter(|s| s != "self"));
            let seen_as = parts
                .next()
                .map(|alias| alias.trim().to_string())
                .or_else(|| path.last().cloned());
            if let Some(seen_as) = seen_as.filter(|_| !path.is_empty()) {
                out.push((path, seen_as));
            }
        }
    }
    let mut out = Vec::new();
    walk(tree, &[], &mut out);
    out
}

fn split_path(s: &str) -> Vec<String> {
    s.split("::")
        .map(str::trim)
        .filter(|p| !p.is_empty() && *p != "*")
        .map(str::to_owned)
        .collect()
}

/// Splits on commas outside braces.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// The trees of the code's `pub use` (and `pub(crate) use`) statements.
fn pub_use_trees(code: &str) -> Vec<String> {
    let mut trees = Vec::new();
    for opener in ["pub use ", "pub(crate) use ", "pub(super) use "] {
        let mut rest = code;
        while let Some(at) = rest.find(opener) {
            let after = &rest[at + opener.len()..];
            let end = after.find(';').unwrap_or(after.len());
            let tree = after[..end].trim();
            trees.push(tree.strip_prefix("::").unwrap_or(tree).to_string());
            rest = &after[end..];
        }
    }
    trees
}

/// Every path the code names that may lead into the crate: `use` trees whole, and
/// `crate::…`/`super::…` paths anywhere.
fn named_paths(code: &str) -> Vec<Vec<String>> {
    // `pub(in crate::a)` names where an item is seen, not what it uses.
    let code = without_visibility_paths(code);
    let code = code.as_str();
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = find_word(rest, "use") {
        let after = &rest[at + 3..];
        let end = after.find(';').unwrap_or(after.len());
        let tree = after[..end].trim();
        let tree = tree.strip_prefix("::").unwrap_or(tree);
        paths.extend(expand_use(tree));
        rest = &after[end..];
    }
    for start in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(at) = rest.find(start) {
            let before = rest[..at].chars().next_back();
            let tail = &rest[at..];
            let len = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            // A path ending in `::` is the head of a `use` tree, read whole above.
            let head_of_tree = tail[..len].ends_with("::");
            if !head_of_tree
                && !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '$')
            {
                paths.push(split_path(&tail[..len]));
            }
            rest = &tail[len.max(1)..];
        }
    }
    paths
}

/// The code with every `pub(in PATH)` written `pub`.
fn without_visibility_paths(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("pub(in ") {
        out.push_str(&rest[..at]);
        out.push_str("pub");
        let after = &rest[at..];
        rest = after.find(')').map_or("", |close| &after[close + 1..]);
    }
    out.push_str(rest);
    out
}

/// The byte offset of `word` standing alone (not part of a longer name).
fn find_word(s: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = s[from..].find(word).map(|n| n + from) {
        let before = s[..at].chars().next_back();
        let after = s[at + word.len()..].chars().next();
        let alone = |c: Option<char>| !c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        if alone(before) && alone(after) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// `path` as named in module `here`, from the crate root; `None` for a path outside
/// the crate (another crate, std).
fn absolute(krate: &Crate, here: &[String], path: &[String]) -> Option<ModPath> {
    let first = path.first()?;
    match first.as_str() {
        "crate" => Some(path[1..].to_vec()),
        "super" => {
            let mut base = here.to_vec();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            base.extend_from_slice(rest);
            Some(base)
        }
        "self" => {
            let mut base = here.to_vec();
            base.extend_from_slice(&path[1..]);
            Some(base)
        }
        _ => {
            // A child module named without `self::`.
            let mut child = here.to_vec();
            child.push(first.clone());
            krate.is_module(&child).then(|| {
                child.extend_from_slice(&path[1..]);
                child
            })
        }
    }
}

fn display(module: &[String]) -> String {
    module.join("::")
}

fn allowed(from: &[String], to: &[String]) -> bool {
    let name = display(from);
    let target = display(to);
    let rules = rules();
    let Some((_, may)) = rules
        .iter()
        .filter(|(prefix, _)| name == *prefix || name.starts_with(&format!("{prefix}::")))
        .max_by_key(|(prefix, _)| prefix.len())
    else {
        return true;
    };
    let within = |prefix: &str| target == prefix || target.starts_with(&format!("{prefix}::"));
    let own = from.first().is_some_and(|top| within(top)) && !name.starts_with("cli::client");
    own || may.iter().any(|p| within(p))
}

/// File-to-file imports: `from` → the set of modules it imports from.
fn imports(krate: &Crate) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mut graph = BTreeMap::new();
    for (module, file) in &krate.files {
        let source = std::fs::read_to_string(file).expect("read a source file");
        let code = inline_modules_resolved(&without_test_modules(&code_only(&source)));
        let mut targets = BTreeSet::new();
        for path in named_paths(&code) {
            let Some(absolute) = absolute(krate, module, &path) else {
                continue;
            };
            if let Some(target) = krate.file_of(&absolute) {
                if target != module {
                    targets.insert(target.clone());
                }
            }
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

/// The strongly connected components of more than one file (Tarjan).
fn cycles(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    struct Walk<'g> {
        graph: &'g BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<&'g ModPath, usize>,
        low: BTreeMap<&'g ModPath, usize>,
        stack: Vec<&'g ModPath>,
        on_stack: BTreeSet<&'g ModPath>,
        found: Vec<Vec<ModPath>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, node: &'g ModPath) {
            let n = self.index.len();
            self.index.insert(node, n);
            self.low.insert(node, n);
            self.stack.push(node);
            self.on_stack.insert(node);
            for next in self.graph.get(node).into_iter().flatten() {
                if !self.graph.contains_key(next) {
                    continue;
                }
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[next].min(self.low[node]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(next) {
                    let low = self.index[next].min(self.low[node]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    component.push(top.clone());
                    if top == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !walk.index.contains_key(node) {
            walk.visit(node);
        }
    }
    walk.found
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn every_import_goes_down_the_layers() {
    let krate = Crate::read(&src());
    assert!(krate.files.len() > 50, "the crate's files were found");
    let mut upward = Vec::new();
    for (from, targets) in imports(&krate) {
        for to in targets {
            if !allowed(&from, &to) {
                upward.push(format!("{} imports {}", display(&from), display(&to)));
            }
        }
    }
    let found: BTreeSet<String> = upward.iter().cloned().collect();
    ratchet(
        "imports against the layers (see this file's docs)",
        &found,
        KNOWN_UPWARD,
        &upward.join("\n  "),
    );
}

#[test]
fn no_two_files_import_each_other() {
    let krate = Crate::read(&src());
    let graph = imports(&krate);
    let found = cycles(&graph);
    let described: Vec<String> = found
        .iter()
        .map(|files| {
            let members: BTreeSet<&ModPath> = files.iter().collect();
            let edges: Vec<String> = files
                .iter()
                .flat_map(|from| {
                    graph[from]
                        .iter()
                        .filter(|to| members.contains(to))
                        .map(move |to| format!("{} -> {}", display(from), display(to)))
                })
                .collect();
            format!("{} files: {}", files.len(), edges.join(", "))
        })
        .collect();
    let named: BTreeSet<String> = found
        .iter()
        .map(|files| format!("{} and {} more", display(&files[0]), files.len() - 1))
        .collect();
    ratchet(
        "import cycles between files of src/",
        &named,
        KNOWN_CYCLES,
        &described.join("\n  "),
    );
}

#[test]
fn the_reader_sees_what_the_checks_rely_on() {
    let code = code_only(
        "use crate::a::{b, c::{d, e as f}}; // use crate::x;\nlet s = \"crate::y\"; fn g<'a>(c: char) { crate::h::i(); super::j::k; '{' }\npub(in crate::z) struct W;",
    );
    let paths = named_paths(&code);
    let spelled: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    for expected in [
        "crate::a::b",
        "crate::a::c::d",
        "crate::a::c::e",
        "crate::h::i",
        "super::j::k",
    ] {
        assert!(
            spelled.contains(&expected.to_string()),
            "{expected} in {spelled:?}"
        );
    }
    assert!(
        !spelled
            .iter()
            .any(|p| p.contains('x') || p.contains('y') || p.contains('z')),
        "{spelled:?}"
    );
    let graph = BTreeMap::from([
        (
            vec!["a".to_string()],
            BTreeSet::from([vec!["b".to_string()]]),
        ),
        (
            vec!["b".to_string()],
            BTreeSet::from([vec!["a".to_string()]]),
        ),
        (
            vec!["c".to_string()],
            BTreeSet::from([vec!["a".to_string()]]),
        ),
    ]);
    assert_eq!(cycles(&graph).len(), 1);
    assert!(!allowed(
        &["store".into(), "log".into()],
        &["actors".into()]
    ));
    assert!(allowed(
        &["http".into(), "runs".into()],
        &["actors".into(), "journal".into()]
    ));
    assert!(!allowed(
        &["cli".into(), "client".into(), "logs".into()],
        &["http".into(), "logs".into()]
    ));
}
