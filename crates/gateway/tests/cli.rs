//! The `gateway` command as README shows it: `demo` (the main job), `check`
//! and `hash-key`, run as a real process.

use std::process::Command;

use crate::harness::{TempDir, process::binary};

fn gateway(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary())
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_demo_runs_on_the_simulated_upstream_and_prints_the_dashboard() {
    let (ok, out, err) = gateway(&["demo", "--requests", "60", "--seconds", "0"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("/dashboard"), "{out}");
    assert!(out.contains("60/60 requests"), "{out}");
    for line in [
        "Key Pool Status",
        "demo-revoked",
        "disabled",
        "Canary gpt-4.1",
        "Budget global daily",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    assert!(!out.contains("sk-sim-"), "no secret in the output");
}

#[test]
fn check_and_hash_key_answer_and_fail_clearly() {
    let (ok, out, _) = gateway(&["hash-key", "abc"]);
    assert!(ok);
    assert_eq!(
        out.trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let dir = TempDir::new("cli");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"127.0.0.1:9000\"\ncolour = \"blue\"\n",
    )
    .unwrap();
    let (ok, _, err) = gateway(&["check", "--config", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("line 3") && err.contains("colour"), "{err}");
    let (ok, _, err) = gateway(&[
        "serve",
        "--config",
        dir.join("missing.toml").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("missing.toml") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn a_config_error_never_echoes_a_secret() {
    let dir = TempDir::new("cli-secret");
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        "[[providers]]\nname = \"p\"\nbase_url = \"http://x/v1\"\nkeys = [{ name = \"k\", secret = \"sk-live-do-not-print-0123456789\", tier = \"x\" }]\n",
    )
    .unwrap();
    let (ok, out, err) = gateway(&["check", "--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        !out.contains("do-not-print") && !err.contains("do-not-print"),
        "{err}"
    );
    assert!(err.contains("line 4") && err.contains("`tier`"), "{err}");
}
