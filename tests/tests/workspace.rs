//! Cross-cutting invariants of the workspace: the layering of crates, the pure
//! crates' dependency diet, lint opt-in, and docs that agree with the tree.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Our crates, lowest layer first, with the crates of ours each may depend on.
/// A crate not listed here fails the layering test: add it with its layer.
fn layers() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let pure: &[&str] = &[];
    let mut m = BTreeMap::new();
    m.insert("keypool-core", pure.iter().copied().collect());
    m.insert("canary", pure.iter().copied().collect());
    m.insert("budget", pure.iter().copied().collect());
    m.insert("wire", pure.iter().copied().collect());
    m.insert("transport", ["keypool-core", "wire"].into_iter().collect());
    m.insert(
        "gateway-client",
        ["keypool-core", "canary", "budget", "wire", "transport"]
            .into_iter()
            .collect(),
    );
    m.insert(
        "gateway",
        [
            "keypool-core",
            "canary",
            "budget",
            "wire",
            "transport",
            "gateway-client",
        ]
        .into_iter()
        .collect(),
    );
    m
}

/// External (non-dev) dependencies each pure crate may have.
fn pure_diet() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let mut m = BTreeMap::new();
    m.insert("keypool-core", ["thiserror", "serde"].into_iter().collect());
    m.insert(
        "canary",
        ["thiserror", "serde", "md-5"].into_iter().collect(),
    );
    m.insert(
        "budget",
        ["thiserror", "serde", "serde_json", "toml"]
            .into_iter()
            .collect(),
    );
    // bytestring: the checked body as UTF-8 text over the same `Bytes`.
    m.insert("wire", ["bytes", "bytestring"].into_iter().collect());
    m
}

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One of our crates, as `cargo metadata` describes it.
struct Crate {
    name: String,
    manifest: PathBuf,
    /// (dependency name, kind: "normal", "dev" or "build").
    deps: Vec<(String, String)>,
}

/// Each crate under crates/.
fn our_crates() -> Vec<Crate> {
    let meta = metadata();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["manifest_path"].as_str().unwrap().contains("/crates/"))
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    (
                        d["name"].as_str().unwrap().to_owned(),
                        d["kind"].as_str().unwrap_or("normal").to_owned(),
                    )
                })
                .collect();
            Crate {
                name: p["name"].as_str().unwrap().to_owned(),
                manifest: PathBuf::from(p["manifest_path"].as_str().unwrap()),
                deps,
            }
        })
        .collect()
}

#[test]
fn each_layer_depends_only_on_layers_below_it() {
    let layers = layers();
    let crates = our_crates();
    assert!(crates.iter().any(|c| c.name == "keypool-core"));
    for Crate { name, deps, .. } in &crates {
        let allowed = layers
            .get(name.as_str())
            .unwrap_or_else(|| panic!("crate {name} has no layer in tests/tests/workspace.rs"));
        for (dep, kind) in deps {
            if layers.contains_key(dep.as_str()) && kind != "dev" {
                assert!(
                    allowed.contains(dep.as_str()),
                    "{name} must not depend on {dep}: it is not below it"
                );
            }
        }
    }
}

#[test]
fn pure_crates_keep_their_dependencies_minimal() {
    let diet = pure_diet();
    for Crate { name, deps, .. } in our_crates() {
        let Some(allowed) = diet.get(name.as_str()) else {
            continue;
        };
        for (dep, kind) in deps {
            if kind == "normal" {
                assert!(
                    allowed.contains(dep.as_str()),
                    "pure crate {name} must not depend on {dep}"
                );
            }
        }
    }
}

#[test]
fn every_crate_opts_into_the_workspace_lints_and_documents_itself() {
    for Crate { name, manifest, .. } in our_crates() {
        let toml = std::fs::read_to_string(&manifest).unwrap();
        assert!(
            toml.contains("[lints]\nworkspace = true"),
            "{name}: add `[lints] workspace = true`"
        );
        let lib = manifest.parent().unwrap().join("src/lib.rs");
        if let Ok(lib) = std::fs::read_to_string(&lib) {
            assert!(
                lib.starts_with("//!"),
                "{name}: lib.rs must open with a crate doc"
            );
            let doc: String = lib
                .lines()
                .take_while(|l| l.starts_with("//!"))
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                doc.contains("```"),
                "{name}: the crate doc needs an example"
            );
        }
    }
    assert!(read("xtask/Cargo.toml").contains("[lints]\nworkspace = true"));
}

#[test]
fn readme_shows_the_command_ci_runs() {
    let ci = read(".ci/run");
    assert!(ci.contains("set -euo pipefail"));
    let command = ci
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cargo xtask"))
        .expect(".ci/run runs cargo xtask");
    let readme = read("README.md");
    assert!(readme.contains(command), "README.md must show `{command}`");
}

#[test]
fn architecture_doc_has_a_section_per_crate() {
    let arch = read("docs/ARCHITECTURE.md");
    for Crate { name, .. } in our_crates() {
        assert!(
            arch.contains(&format!("### `{name}`")),
            "docs/ARCHITECTURE.md needs a `### `{name}`` section"
        );
    }
    assert!(arch.contains("**Architecture Invariant:**"));
}

/// One source file of the gateway library: its module path (`["http",
/// "openai"]` for `src/http/openai.rs`) and its code lines (comments left out).
struct Module {
    path: Vec<String>,
    file: String,
    code: String,
}

fn gateway_modules() -> Vec<Module> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    let src = root().join("crates/gateway/src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .filter(|f| !f.ends_with("main.rs"))
        .map(|f| {
            let rel = f.strip_prefix(&src).unwrap().with_extension("");
            let mut path: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(path.last().map(String::as_str), Some("mod" | "lib")) {
                path.pop();
            }
            let text = std::fs::read_to_string(&f).unwrap();
            let code = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            Module {
                path,
                file: f.strip_prefix(root()).unwrap().display().to_string(),
                code,
            }
        })
        .collect()
}

/// The items of a `{...}` group at the start of `s`, split at its top-level
/// commas.
fn group_items(s: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 1);
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
    items.into_iter().filter(|i| !i.is_empty()).collect()
}

/// The paths a `use`-style path starting at `rest` names: `a::b`,
/// `a::{b, c::d}`, `{a, b}` (groups expanded, `self` in a group naming its
/// parent).
fn expand_path(rest: &str) -> Vec<Vec<String>> {
    let mut segments: Vec<String> = Vec::new();
    let mut s = rest;
    loop {
        if s.starts_with('{') {
            let mut out = Vec::new();
            for item in group_items(s) {
                if item == "self" {
                    out.push(segments.clone());
                } else {
                    for tail in expand_path(item) {
                        out.push([segments.clone(), tail].concat());
                    }
                }
            }
            return out;
        }
        let ident: String = s
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            return vec![segments];
        }
        s = &s[ident.len()..];
        segments.push(ident);
        match s.strip_prefix("::") {
            Some(next) => s = next,
            None => return vec![segments],
        }
    }
}

/// The module paths `m` refers to, absolute (`crate::`, `super::`, `self::`).
fn references(m: &Module) -> Vec<Vec<String>> {
    let mut refs = Vec::new();
    // The parent of a module file is its `super`.
    let parent = &m.path[..m.path.len().saturating_sub(1)];
    let code = &m.code;
    for (i, _) in code.match_indices("::") {
        let before = &code[..i];
        let word_start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |p| p + 1);
        let head = &code[word_start..i];
        let base: Vec<String> = if head == "crate" {
            Vec::new()
        } else if head == "self" {
            m.path.clone()
        } else if head == "super" {
            parent.to_vec()
        } else {
            continue;
        };
        for tail in expand_path(&code[i + 2..]) {
            let mut path = base.clone();
            let mut tail = tail.as_slice();
            while let Some(("super", rest)) = tail.split_first().map(|(h, r)| (h.as_str(), r)) {
                path.pop();
                tail = rest;
            }
            path.extend(tail.iter().cloned());
            refs.push(path);
        }
    }
    refs
}

/// `path` cut to the longest prefix that is one of `modules`.
fn resolve(path: &[String], modules: &BTreeSet<Vec<String>>) -> Vec<String> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
        .unwrap_or_default()
}

/// Edges between sibling modules: `a::x` referring to `a::y::z` is an edge
/// `a::x -> a::y`. A module referring to its ancestors (the vocabulary they
/// hold) or its descendants (the children it declares) is not an edge.
fn sibling_edges() -> BTreeMap<(Vec<String>, Vec<String>), String> {
    let modules = gateway_modules();
    let known: BTreeSet<Vec<String>> = modules.iter().map(|m| m.path.clone()).collect();
    let mut edges = BTreeMap::new();
    for m in &modules {
        for r in references(m) {
            let to = resolve(&r, &known);
            let common = m.path.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common == m.path.len() || common == to.len() {
                continue;
            }
            let edge = (m.path[..=common].to_vec(), to[..=common].to_vec());
            edges.entry(edge).or_insert_with(|| m.file.clone());
        }
    }
    edges
}

#[test]
fn the_gateways_modules_import_each_other_in_one_direction_only() {
    let edges = sibling_edges();
    let graph: BTreeMap<&Vec<String>, Vec<&Vec<String>>> =
        edges.keys().fold(BTreeMap::new(), |mut g, (a, b)| {
            g.entry(a).or_default().push(b);
            g
        });
    // Depth-first search for a path back to where it started.
    fn back_to<'a>(
        start: &'a Vec<String>,
        at: &'a Vec<String>,
        graph: &BTreeMap<&'a Vec<String>, Vec<&'a Vec<String>>>,
        seen: &mut BTreeSet<&'a Vec<String>>,
        trail: &mut Vec<&'a Vec<String>>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            trail.push(next);
            if *next == start || (seen.insert(next) && back_to(start, next, graph, seen, trail)) {
                return true;
            }
            trail.pop();
        }
        false
    }
    for start in graph.keys() {
        let mut trail = vec![*start];
        if back_to(start, start, &graph, &mut BTreeSet::new(), &mut trail) {
            let names: Vec<String> = trail.iter().map(|p| p.join("::")).collect();
            let files: Vec<&String> = trail
                .windows(2)
                .map(|w| &edges[&(w[0].clone(), w[1].clone())])
                .collect();
            panic!(
                "gateway modules import each other: {} (in {files:?})",
                names.join(" -> ")
            );
        }
    }
    assert!(
        edges.contains_key(&(vec!["runtime".to_owned()], vec!["http".to_owned()])),
        "the module graph is really read"
    );
}

#[test]
fn only_the_runtime_imports_the_http_layer_and_storage_imports_no_http() {
    for ((from, to), file) in sibling_edges() {
        if to.first().is_some_and(|t| t == "http") && from.len() == 1 {
            assert_eq!(
                from,
                ["runtime"],
                "{file}: only the runtime may import the HTTP layer"
            );
        }
    }
    for m in gateway_modules() {
        if m.path.first().is_some_and(|p| p == "store") {
            for http in [
                "crate::http",
                "axum::",
                "hyper::",
                "use http::",
                "reqwest::",
            ] {
                assert!(
                    !m.code.contains(http),
                    "{}: storage code must not use HTTP code ({http})",
                    m.file
                );
            }
        }
    }
}

#[test]
fn the_module_reader_expands_groups_and_relative_paths() {
    assert_eq!(
        expand_path("{x, y::z};"),
        vec![vec!["x".to_owned()], vec!["y".to_owned(), "z".to_owned()]]
    );
    assert_eq!(
        expand_path("a::{b, c::{d, self}}"),
        vec![
            vec!["a".to_owned(), "b".to_owned()],
            vec!["a".to_owned(), "c".to_owned(), "d".to_owned()],
            vec!["a".to_owned(), "c".to_owned()],
        ]
    );
    let m = Module {
        path: vec!["http".into(), "admin".into(), "canary".into()],
        file: String::new(),
        code: "use super::super::error::ApiError;\nuse crate::state::AppState;".into(),
    };
    assert_eq!(
        references(&m),
        vec![
            vec!["http".to_owned(), "error".to_owned(), "ApiError".to_owned()],
            vec!["state".to_owned(), "AppState".to_owned()],
        ]
    );
}
