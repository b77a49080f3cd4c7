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
    m.insert("transport", ["keypool-core"].into_iter().collect());
    m.insert(
        "gateway-client",
        ["keypool-core", "canary", "budget", "transport"]
            .into_iter()
            .collect(),
    );
    m.insert(
        "gateway",
        [
            "keypool-core",
            "canary",
            "budget",
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
