//! `cargo xtask lint`'s import check of `portsentry/src`: which top-level module uses which
//! (`use crate::…`, `crate::…` paths, `super::…` that climbs out of a module, exported macros),
//! read with syn. It fails on an import circle, naming it and the files that make each edge,
//! and on an import against the layering of docs/ARCHITECTURE.md ("Layers"): a module uses
//! only modules of a lower layer. A module missing from [`LAYERS`] is held to the circle
//! check alone.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use proc_macro2::{TokenStream, TokenTree};
use syn::visit::{self, Visit};

/// The layers, lowest first: a module may use the modules of the layers below its own.
pub const LAYERS: &[&[&str]] = &[
    // Value types and host facts that import nothing of the crate.
    &["clock", "journal", "net", "report", "secret_file"],
    // The ground floor of settings (serde types and their values' checks) and of the state
    // files (atomic writes, keeping aside a file that cannot be used).
    &["config", "state_file"],
    &["dataplane"],
    &["detect"],
    &["bans"],
    // The ban book's users, side by side (none uses another).
    &["peers", "hooks", "fleet", "notify"],
    &["metrics"],
    &["control"],
    &["daemon"],
    &["cli"],
];

/// Where one module uses another: the files that do.
type Edges = BTreeMap<String, BTreeMap<String, BTreeSet<PathBuf>>>;

pub fn check(src: &Path) -> Result<()> {
    let files = rust_files(src)?;
    let tops: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_path(src, f).into_iter().next())
        .collect();
    let mut parsed = Vec::new();
    for file in &files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let ast = syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
        parsed.push((file.clone(), ast));
    }
    // `#[macro_export]` macros live at the crate root but belong to the module defining them.
    let mut macros = BTreeMap::new();
    for (file, ast) in &parsed {
        if let Some(top) = module_path(src, file).into_iter().next() {
            for item in &ast.items {
                if let syn::Item::Macro(m) = item {
                    let exported = m.attrs.iter().any(|a| a.path().is_ident("macro_export"));
                    if let (true, Some(name)) = (exported, &m.ident) {
                        macros.insert(name.to_string(), top.clone());
                    }
                }
            }
        }
    }
    let mut edges = Edges::new();
    for (file, ast) in &parsed {
        let module = module_path(src, file);
        let Some(top) = module.first().cloned() else {
            continue; // lib.rs, main.rs: the crate root wires everything
        };
        let mut v = Uses {
            module,
            tops: &tops,
            macros: &macros,
            found: BTreeSet::new(),
        };
        v.visit_file(ast);
        for used in v.found {
            if used != top {
                let rel = file.strip_prefix(src).unwrap_or(file).to_owned();
                edges
                    .entry(top.clone())
                    .or_default()
                    .entry(used)
                    .or_default()
                    .insert(rel);
            }
        }
    }
    let mut problems = Vec::new();
    for circle in circles(&edges) {
        let mut text = format!("import circle: {}", circle.join(" → "));
        for pair in circle.windows(2) {
            let by = &edges[&pair[0]][&pair[1]];
            let names: Vec<String> = by.iter().map(|p| p.display().to_string()).collect();
            text += &format!("\n    {} → {}: {}", pair[0], pair[1], names.join(", "));
        }
        problems.push(text);
    }
    let layer = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
    for (from, used) in &edges {
        for (to, by) in used {
            if let (Some(a), Some(b)) = (layer(from), layer(to)) {
                if b >= a {
                    let names: Vec<String> = by.iter().map(|p| p.display().to_string()).collect();
                    problems.push(format!(
                        "layering: {from} (layer {a}) uses {to} (layer {b}), which is not below it: {}",
                        names.join(", ")
                    ));
                }
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "portsentry/src imports (docs/ARCHITECTURE.md, \"Layers\"):\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(())
}

fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let path = e.path();
        if path.is_dir() {
            out.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    Ok(out)
}

/// The module a file holds, from the crate root: `bans/store/mod.rs` → `[bans, store]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        let root = parts.is_empty() && matches!(stem, "lib" | "main");
        if stem != "mod" && !root {
            parts.push(stem.to_owned());
        }
    }
    parts
}

/// The top-level modules one file uses.
struct Uses<'a> {
    /// The module being read, inline `mod`s included.
    module: Vec<String>,
    tops: &'a BTreeSet<String>,
    macros: &'a BTreeMap<String, String>,
    found: BTreeSet<String>,
}

impl Uses<'_> {
    /// Records the top-level module a path starting with `first`, `rest…` names, if any.
    fn path<'s>(&mut self, mut segments: impl Iterator<Item = &'s str>) {
        let Some(first) = segments.next() else {
            return;
        };
        let named = match first {
            "crate" => segments.next().map(str::to_owned),
            "super" => {
                let mut module = self.module.clone();
                module.pop();
                let mut next = segments.next();
                while next == Some("super") {
                    module.pop();
                    next = segments.next();
                }
                match module.first() {
                    Some(top) => Some(top.clone()),
                    None => next.map(str::to_owned),
                }
            }
            _ => None,
        };
        if let Some(name) = named {
            if self.tops.contains(&name) {
                self.found.insert(name);
            } else if let Some(owner) = self.macros.get(&name) {
                self.found.insert(owner.clone());
            }
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.path(prefix.iter().map(String::as_str));
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.path(prefix.iter().map(String::as_str));
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.path(prefix.iter().map(String::as_str)),
        }
    }

    /// `crate::x` and `super::x` inside a macro's tokens (`select!`, `format!` arguments).
    fn tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < trees.len() {
            match &trees[i] {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(id) if id == "crate" || id == "super" => {
                    let mut segments = vec![id.to_string()];
                    let mut j = i + 1;
                    while let (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) =
                        (trees.get(j), trees.get(j + 1))
                    {
                        match (a.as_char(), b.as_char(), trees.get(j + 2)) {
                            (':', ':', Some(TokenTree::Ident(next))) => {
                                segments.push(next.to_string());
                                j += 3;
                            }
                            _ => break,
                        }
                    }
                    self.path(segments.iter().map(String::as_str));
                    i = j.max(i + 1);
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Uses<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.module.push(m.ident.to_string());
        visit::visit_item_mod(self, m);
        self.module.pop();
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let names: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.path(names.iter().map(String::as_str));
        visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        if let Some(owner) = m
            .path
            .segments
            .last()
            .and_then(|s| self.macros.get(&s.ident.to_string()))
        {
            self.found.insert(owner.clone());
        }
        self.tokens(m.tokens.clone());
        visit::visit_macro(self, m);
    }
}

/// Every strongly connected group of two or more modules, each as one circle through it
/// (first module repeated at the end).
fn circles(edges: &Edges) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges
        .iter()
        .flat_map(|(a, used)| std::iter::once(a).chain(used.keys()))
        .collect();
    let reach = |from: &String, to: &String| -> Option<Vec<String>> {
        // Breadth-first path from `from` to `to`.
        let mut prev: BTreeMap<&String, &String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([from]);
        while let Some(n) = queue.pop_front() {
            for next in edges.get(n).into_iter().flat_map(|u| u.keys()) {
                if next == to {
                    let mut path = vec![to.clone(), n.clone()];
                    let mut at = n;
                    while at != from {
                        at = prev[at];
                        path.push(at.clone());
                    }
                    path.reverse();
                    return Some(path);
                }
                if next != from && !prev.contains_key(next) {
                    prev.insert(next, n);
                    queue.push_back(next);
                }
            }
        }
        None
    };
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for n in nodes {
        if seen.contains(n) {
            continue;
        }
        if let Some(circle) = reach(n, n) {
            seen.extend(circle.iter().cloned());
            out.push(circle);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges(list: &[(&str, &str)]) -> Edges {
        let mut e = Edges::new();
        for (a, b) in list {
            e.entry(a.to_string())
                .or_default()
                .entry(b.to_string())
                .or_default()
                .insert(PathBuf::from(format!("{a}/mod.rs")));
        }
        e
    }

    #[test]
    fn a_circle_is_found_and_named() {
        let e = edges(&[
            ("config", "bans"),
            ("bans", "dataplane"),
            ("dataplane", "config"),
        ]);
        assert_eq!(circles(&e), [vec!["bans", "dataplane", "config", "bans"]]);
        assert!(circles(&edges(&[("daemon", "bans"), ("bans", "config")])).is_empty());
    }

    #[test]
    fn super_and_crate_paths_resolve_to_top_level_modules() {
        let tops: BTreeSet<String> = ["bans", "fleet", "config", "detect"]
            .map(String::from)
            .into();
        let macros = BTreeMap::from([("errln".to_owned(), "detect".to_owned())]);
        let mut v = Uses {
            module: vec!["bans".into(), "fleet".into()],
            tops: &tops,
            macros: &macros,
            found: BTreeSet::new(),
        };
        let ast = syn::parse_file(
            "use super::BanBook;\nuse crate::{config::settings, net::cidr};\n\
             mod tests { fn f() { super::super::x(); crate::errln!(\"{}\", crate::fleet::y()); } }",
        )
        .unwrap();
        v.visit_file(&ast);
        assert_eq!(
            v.found.into_iter().collect::<Vec<_>>(),
            ["bans", "config", "detect", "fleet"]
        );
    }

    #[test]
    fn file_paths_are_modules() {
        let src = Path::new("/s");
        assert_eq!(
            module_path(src, Path::new("/s/bans/store/mod.rs")),
            ["bans", "store"]
        );
        assert_eq!(module_path(src, Path::new("/s/clock.rs")), ["clock"]);
        assert!(module_path(src, Path::new("/s/lib.rs")).is_empty());
        assert_eq!(
            module_path(src, Path::new("/s/cli/verbs/run.rs")),
            ["cli", "verbs", "run"]
        );
    }

    #[test]
    fn portsentry_src_keeps_its_layers() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../portsentry/src");
        if let Err(e) = check(&src) {
            panic!("{e:#}");
        }
    }
}
