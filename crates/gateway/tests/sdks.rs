//! The official SDKs, as users run them, against the gateway over the
//! simulated upstream: the `openai` Python and Node packages (installed by
//! `cargo xtask` under `target/sdk/`). Skipped where they are missing,
//! unless `KEYPOOL_REQUIRE_SDK=1` (as `cargo xtask test` sets).

use std::path::{Path, PathBuf};

use serde_json::Value;

use gateway::sim::Behavior;

use crate::harness::{Gateway, HEALTHY, REVOKED, Setup, SimKey};

const SECOND: SimKey = (
    "second",
    "sk-sim-second-0000000000000009",
    Behavior::Healthy,
);

/// How to run one SDK: the program, and the environment it needs.
struct Runner {
    program: PathBuf,
    env: Vec<(&'static str, String)>,
}

/// The Python SDK's interpreter, or why it is missing.
fn python() -> Result<Runner, String> {
    let python = std::env::var_os("KEYPOOL_SDK_PYTHON")
        .ok_or("KEYPOOL_SDK_PYTHON is not set (cargo xtask sdk)")?;
    Ok(Runner {
        program: PathBuf::from(python),
        env: Vec::new(),
    })
}

/// Node with the Node SDK on its path, or why it is missing.
fn node() -> Result<Runner, String> {
    let modules = std::env::var("KEYPOOL_SDK_NODE_PATH")
        .map_err(|_| "KEYPOOL_SDK_NODE_PATH is not set (cargo xtask sdk)")?;
    Ok(Runner {
        program: PathBuf::from("node"),
        env: vec![("NODE_PATH", modules)],
    })
}

/// Runs `script` with `runner` against `gw`; its JSON output, or `None`
/// when the SDK is missing and not required.
async fn run(runner: Result<Runner, String>, script: &str, gw: &Gateway) -> Option<Value> {
    let runner = match runner {
        Ok(r) => r,
        Err(why) if std::env::var_os("KEYPOOL_REQUIRE_SDK").is_none() => {
            eprintln!("skipped: {why}");
            return None;
        }
        Err(why) => panic!("{why}"),
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let out = tokio::process::Command::new(&runner.program)
        .arg(&script)
        .envs(runner.env)
        .env("OPENAI_BASE_URL", gw.url("/v1"))
        .env("OPENAI_API_KEY", "sk-client-of-the-gateway")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} {}: {}\n{stdout}\n{}",
        runner.program.display(),
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_str(stdout.trim()).unwrap())
}

/// What both SDKs must have seen.
fn check(sdk: &str, out: &Value) {
    let text = |k: &str| {
        out[k]
            .as_str()
            .unwrap_or_else(|| panic!("{sdk}: no {k} in {out}"))
    };
    assert!(text("chat").contains("Simulated answer"), "{sdk}: {out}");
    assert_eq!(
        text("chat_stream"),
        text("chat"),
        "{sdk}: streamed as plain"
    );
    assert!(
        text("response").contains("Simulated response"),
        "{sdk}: {out}"
    );
    assert!(text("response_id").starts_with("resp_"), "{sdk}: {out}");
    assert_eq!(
        out["response_output_tokens"], 6,
        "{sdk}: the cap reached the upstream"
    );
    assert!(
        text("response_stream").contains("Simulated response"),
        "{sdk}: {out}"
    );
    let kinds = out["response_stream_events"].as_array().unwrap();
    assert_eq!(kinds.first().unwrap(), "response.created", "{sdk}: {out}");
    assert_eq!(kinds.last().unwrap(), "response.completed", "{sdk}: {out}");
    assert!(
        out["response_stream_usage"].as_u64().unwrap() > 0,
        "{sdk}: {out}"
    );
    assert_eq!(out["embedding"], 4, "{sdk}: {out}");
    assert!(
        text("completion").contains("Simulated completion"),
        "{sdk}: {out}"
    );
}

/// The gateway every SDK test runs against: a revoked key first, so every
/// surface fails over once, unseen by the SDK; then two healthy keys picked
/// by least use, so follow-ups and file reads find their ids only if they
/// reach the key that made them.
async fn gateway() -> Gateway {
    Setup::new(&[REVOKED, HEALTHY, SECOND])
        .configure(|c| c.canary.clear())
        .start()
        .await
}

/// The requests the gateway recorded, for one SDK's run.
async fn requests(gw: &Gateway) -> u64 {
    let usage = gw.json("/v1/usage").await;
    crate::harness::requests_in(&usage)
}

#[tokio::test]
async fn the_openai_python_package_works_through_the_gateway() {
    let gw = gateway().await;
    let Some(out) = run(python(), "openai_sdk.py", &gw).await else {
        return;
    };
    check("python", &out);
    assert_eq!(
        requests(&gw).await,
        11,
        "each of the eleven calls booked once"
    );
}

#[tokio::test]
async fn the_openai_node_package_works_through_the_gateway() {
    let gw = gateway().await;
    let Some(out) = run(node(), "openai_sdk.cjs", &gw).await else {
        return;
    };
    check("node", &out);
    assert_eq!(
        requests(&gw).await,
        11,
        "each of the eleven calls booked once"
    );
}
