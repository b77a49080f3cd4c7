//! Project automation, run from anywhere in the workspace as `cargo xtask <job>`.
//!
//! - `lint`: rustfmt check, clippy with warnings denied, rustdoc with warnings denied;
//! - `test`: every unit, property, integration and doc test, with all features
//!   and with none, with Chromium installed, the official SDKs installed
//!   under `target/sdk/` (`sdk.rs`) and a Postgres server found or started
//!   (`postgres.rs`), so that no test skips;
//! - `ci`: `lint` then `test` (what `.ci/run` runs);
//! - `bench`: the criterion benchmarks and the memory measurement, written as
//!   a table to `docs/benchmarks.md`;
//! - `bench-gateway`: a load run of the release gateway against the simulated
//!   upstream, written to its own section of `docs/benchmarks.md`
//!   (`bench-gateway --quick`: the 16-connection rows only, printed;
//!   `--store`: the store's cost and reports beside traffic, printed;
//!   `--traces`: what exporting traces costs, printed;
//!   `--affinity`: prompt-cache affinity's cached share, printed;
//!   `KEYPOOL_BENCH_BIN=path` measures another build, for an A/B run, and
//!   `KEYPOOL_BENCH_NO_POSTGRES=1` leaves the Postgres rows out for a build without them);
//! - `sdk`: installs the official SDKs the tests use and prints where;
//! - `postgres`: prints the URL of the Postgres server the tests use,
//!   starting a throwaway cluster when none answers (kept until Enter);
//! - `fuzz [RUNS]`: the body reader's fuzz target (`crates/wire/fuzz`)
//!   under `cargo fuzz` on the nightly toolchain, for RUNS executions
//!   (default 10 million); installs cargo-fuzz when it is missing;
//! - `forward UPSTREAM KEY`: the bare forwarder `bench-gateway` measures
//!   for scale, as a process of its own.
//!
//! `test` ends with one line totalling every test binary's results
//! (`tests: N passed, N failed, N skipped`). It depends on nothing but
//! `serde_json` (to read criterion's estimates), so it compiles in seconds.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::{env, fs};

mod load;
mod postgres;
mod sdk;

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let job = env::args().nth(1).unwrap_or_default();
    let result = match job.as_str() {
        "lint" => lint(),
        "test" => test(),
        "ci" => lint().and_then(|()| test()),
        "bench" => bench(),
        "sdk" => sdk::install().map(|s| {
            println!("KEYPOOL_SDK_PYTHON={}", s.python.display());
            println!("KEYPOOL_SDK_NODE_PATH={}", s.node_modules.display());
        }),
        "postgres" => postgres::server().map(|pg| {
            println!("{}", pg.url);
            // Kept running until the user presses Enter.
            let _ = std::io::stdin().read_line(&mut String::new());
        }),
        "fuzz" => fuzz(env::args().nth(2).as_deref().unwrap_or("10000000")),
        "forward" => match (env::args().nth(2), env::args().nth(3)) {
            (Some(upstream), Some(key)) => load::run_forwarder(&upstream, &key),
            _ => Err("usage: cargo xtask forward UPSTREAM_ADDR KEY".into()),
        },
        "bench-gateway" => match env::args().nth(2).as_deref() {
            Some("--quick") => bench_gateway(load::Only::Comparison),
            Some("--affinity") => bench_gateway(load::Only::Affinity),
            Some("--store") => bench_gateway(load::Only::Store),
            Some("--traces") => bench_gateway(load::Only::Traces),
            _ => bench_gateway(load::Only::Everything),
        },
        _ => Err(format!(
            "unknown job {job:?}\nusage: cargo xtask <lint|test|ci|sdk|bench|bench-gateway [--quick|--store|--traces|--affinity]|fuzz [RUNS]|postgres|forward UPSTREAM KEY>"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the body reader's fuzz target for `runs` executions.
fn fuzz(runs: &str) -> Result<()> {
    let runs: u64 = runs
        .parse()
        .map_err(|_| format!("RUNS must be a number, not {runs:?}"))?;
    let has_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_fuzz {
        cargo(&["install", "cargo-fuzz", "--locked"], &[])?;
    }
    let status = Command::new("cargo")
        .args(["+nightly", "fuzz", "run", "body", "--"])
        .arg(format!("-runs={runs}"))
        .arg("-max_len=4096")
        .current_dir(root().join("crates/wire"))
        .status()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("the fuzz target failed: see its artifacts in crates/wire/fuzz/artifacts".into())
    }
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Runs `cargo <args>` at the workspace root with extra environment variables.
pub(crate) fn cargo(args: &[&str], envs: &[(&str, &str)]) -> Result<()> {
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

fn cargo_output(args: &[&str]) -> Result<String> {
    eprintln!("$ cargo {}", args.join(" "));
    let out = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo {}` failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn lint() -> Result<()> {
    cargo(&["fmt", "--all", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    cargo(
        &["doc", "--workspace", "--no-deps", "--all-features"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )
}

/// The gateway's dashboard test drives a real headless Chromium through
/// chromedriver: installs Debian's packages when they are missing.
fn browser_tools() -> Result<()> {
    let present = |var: &str, default: &str| {
        env::var_os(var).map_or_else(|| Path::new(default).exists(), |p| Path::new(&p).exists())
    };
    if present("CHROMIUM", "/usr/bin/chromium") && present("CHROMEDRIVER", "/usr/bin/chromedriver")
    {
        return Ok(());
    }
    apt_install(
        &["chromium", "chromium-driver"],
        "for the dashboard's browser test",
    )
}

/// Installs Debian's `packages` (`why` says what for): the one way the
/// xtask installs what a job needs.
pub(crate) fn apt_install(packages: &[&str], why: &str) -> Result<()> {
    let list = packages.join(" ");
    eprintln!("$ apt-get install {list} ({why})");
    let mut install = vec!["install", "-y", "-qq"];
    install.extend_from_slice(packages);
    for args in [&["update", "-qq"][..], &install] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("cannot run apt-get ({e}): install {list}"))?;
        if !status.success() {
            return Err(format!("apt-get {} failed: install {list}", args.join(" ")));
        }
    }
    Ok(())
}

fn test() -> Result<()> {
    browser_tools()?;
    let sdks = sdk::install()?;
    let (python, node_modules) = (
        sdks.python.display().to_string(),
        sdks.node_modules.display().to_string(),
    );
    // Kept until the tests end: a throwaway cluster stops when dropped.
    let pg = postgres::server()?;
    let envs = [
        // The browser, SDK and Postgres tests skip where their tools are
        // missing, except here, where they were installed or started.
        ("KEYPOOL_REQUIRE_BROWSER", "1"),
        ("KEYPOOL_REQUIRE_SDK", "1"),
        ("KEYPOOL_SDK_PYTHON", python.as_str()),
        ("KEYPOOL_SDK_NODE_PATH", node_modules.as_str()),
        ("KEYPOOL_REQUIRE_POSTGRES", "1"),
        ("KEYPOOL_TEST_POSTGRES_URL", pg.url.as_str()),
    ];
    // Unit, integration, property and bench-smoke tests, then doc tests
    // (`--all-targets` leaves those out), with all features and with none.
    let mut total = Tally::default();
    for args in [
        &["test", "--workspace", "--all-targets", "--all-features"][..],
        &["test", "--workspace", "--doc", "--all-features"],
        &[
            "test",
            "--workspace",
            "--lib",
            "--tests",
            "--no-default-features",
        ],
    ] {
        let (tally, outcome) = cargo_tests(args, &envs);
        total.add(tally);
        if let Err(e) = outcome {
            println!("{}", total.line());
            return Err(e);
        }
    }
    // One closing line for the whole run, in the plain form CI reads.
    println!("{}", total.line());
    if total.passed == 0 {
        return Err("no test ran".into());
    }
    Ok(())
}

/// Test counts summed over every test binary's `test result:` line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }

    /// Reads `test result: ok. 55 passed; 0 failed; 1 ignored; ...`.
    fn parse(line: &str) -> Option<Tally> {
        let rest = line.trim().strip_prefix("test result: ")?;
        let count = |what: &str| {
            rest.split(';')
                .filter_map(|part| part.trim().rsplit_once(' '))
                .find(|(_, w)| *w == what)
                .and_then(|(n, _)| n.rsplit(' ').next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Some(Tally {
            passed: count("passed"),
            failed: count("failed"),
            ignored: count("ignored"),
        })
    }

    fn line(&self) -> String {
        format!(
            "tests: {} passed, {} failed, {} skipped",
            self.passed, self.failed, self.ignored
        )
    }
}

/// Runs `cargo test ...`, passing its output through and counting results.
fn cargo_tests(args: &[&str], envs: &[(&str, &str)]) -> (Tally, Result<()>) {
    use std::io::{BufRead, BufReader};
    eprintln!("$ cargo {}", args.join(" "));
    let mut tally = Tally::default();
    let spawned = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return (tally, Err(format!("cannot run cargo: {e}"))),
    };
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out)
            .lines()
            .map_while(std::result::Result::ok)
        {
            println!("{line}");
            if let Some(t) = Tally::parse(&line) {
                tally.add(t);
            }
        }
    }
    let outcome = match child.wait() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`cargo {}` failed ({status})", args.join(" "))),
        Err(e) => Err(format!("cannot wait for cargo: {e}")),
    };
    (tally, outcome)
}

fn bench() -> Result<()> {
    cargo(&["bench", "-p", "keypool-core", "--bench", "pool"], &[])?;
    cargo(&["bench", "-p", "canary", "--bench", "assign"], &[])?;
    cargo(&["bench", "-p", "budget", "--bench", "ledger"], &[])?;
    cargo(&["bench", "-p", "gateway-client", "--bench", "client"], &[])?;
    let memory = cargo_output(&[
        "test",
        "--release",
        "-p",
        "keypool-core",
        "--test",
        "memory",
        "--",
        "--nocapture",
    ])?;

    let rows = criterion_rows()?;
    let memory_rows: Vec<String> = memory
        .lines()
        .filter_map(|l| l.strip_prefix("memory: "))
        .map(|l| {
            let (what, figure) = l.split_once(": ").unwrap_or((l, ""));
            format!("| {what} | {figure} | ≤ 256 bytes per key |")
        })
        .collect();

    let doc = format!(
        "# Benchmarks\n\n\
         Written by `cargo xtask bench` from a real run; do not edit by hand.\n\n\
         Machine: {machine}.\n\n\
         ## Speed\n\n\
         `acquire_report`: one `acquire` and one `report(Success)` on a pool of N keys \
         with a daily token limit each, time advancing 10 µs per iteration, events \
         drained; `acquire_report_preferring`: the same with a preferred key (prompt-cache \
         affinity: a different key each time, the strategy's pick still made to bound its \
         load). `assign`: one `Rollout::assign` for a 10% rollout over 1 024 rotating \
         subjects (salted; the seeds' unsalted 1000-bucket scheme; salted with a \
         1 000-entry allow-list, a 1 000-entry deny-list and a key-name rule). \
         `ledger/reserve_settle_4_scopes`: one `reserve` and one `settle` against a \
         global, a team, a key and a model limit, among 2 000 other limits that do \
         not apply. `client/chat_completion_overhead_1000_keys`: one \
         `Client::chat_completion` through canary, budget, a 1 000-key pool, \
         classification and statistics, on a transport that answers instantly (so \
         only the client's own work is measured, plus a `block_on`). Median of \
         criterion's samples.\n\n\
         | benchmark | median | target | |\n|---|---|---|---|\n{rows}\n\n\
         ## keypool-core: memory\n\n\
         Heap bytes the pool holds per key (counted by an instrumented allocator in \
         `crates/keypool-core/tests/memory.rs`), beyond each secret's own bytes: the \
         record, the name, the index, the secret map and the slot table, including \
         the spare capacity of growing tables. The test fails above 256.\n\n\
         | pool | measured | budget |\n|---|---|---|\n{memory_rows}\n",
        machine = machine(),
        rows = rows.join("\n"),
        memory_rows = memory_rows.join("\n"),
    );
    // Keep the gateway's load section, which `bench-gateway` writes, and
    // the hand-written comparisons that follow it.
    let out = root().join("docs/benchmarks.md");
    let old = fs::read_to_string(&out).unwrap_or_default();
    let doc = match old.find(&format!("<!-- begin {GATEWAY_SECTION} -->")) {
        Some(start) => format!("{doc}\n{}", &old[start..]),
        None => doc,
    };
    fs::write(&out, doc).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    eprintln!("wrote {}", out.display());
    if rows.iter().any(|r| r.contains("MISSED")) {
        return Err("a benchmark missed its target (see docs/benchmarks.md)".into());
    }
    Ok(())
}

/// One table row per criterion benchmark, with its target.
fn criterion_rows() -> Result<Vec<String>> {
    let criterion = root().join("target/criterion");
    let mut rows = Vec::new();
    for (group, bench, target_ns) in [
        ("acquire_report", "least_used/10000", 1000.0),
        ("acquire_report", "round_robin/10000", 1000.0),
        ("acquire_report", "weighted/10000", 1000.0),
        ("acquire_report", "power_of_two/10000", 1000.0),
        ("acquire_report", "least_used/100000", 2000.0),
        ("acquire_report", "round_robin/100000", 2000.0),
        ("acquire_report", "weighted/100000", 2000.0),
        ("acquire_report", "power_of_two/100000", 2000.0),
        ("acquire_report_preferring", "least_used/10000", 1000.0),
        ("assign", "salted", 250.0),
        ("assign", "seed_compat", 250.0),
        ("assign", "salted_with_overrides", 250.0),
        ("ledger", "reserve_settle_4_scopes", 300.0),
        ("client", "chat_completion_overhead_1000_keys", 5000.0),
    ] {
        let path = criterion.join(group).join(bench).join("new/estimates.json");
        let text = fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let median = json
            .get("median")
            .and_then(|m| m.get("point_estimate"))
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| format!("{}: no median", path.display()))?;
        let verdict = if median <= target_ns { "met" } else { "MISSED" };
        rows.push(format!(
            "| `{group}/{bench}` | {median:.0} ns | ≤ {target_ns:.0} ns | {verdict} |"
        ));
    }
    Ok(rows)
}

const GATEWAY_SECTION: &str = "gateway-load";

/// The marked section `name` of a document, markers included.
fn section(doc: &str, name: &str) -> Option<String> {
    let (start, end) = (
        format!("<!-- begin {name} -->"),
        format!("<!-- end {name} -->"),
    );
    let a = doc.find(&start)?;
    let b = doc[a..].find(&end)? + a + end.len();
    Some(doc[a..b].to_owned())
}

fn bench_gateway(only: load::Only) -> Result<()> {
    let body = load::bench_gateway(only)?;
    if only != load::Only::Everything {
        println!("{body}");
        return Ok(());
    }
    let marked = format!("<!-- begin {GATEWAY_SECTION} -->\n{body}<!-- end {GATEWAY_SECTION} -->");
    let out = root().join("docs/benchmarks.md");
    let old = fs::read_to_string(&out).unwrap_or_default();
    let doc = match section(&old, GATEWAY_SECTION) {
        Some(previous) => old.replace(&previous, &marked),
        None => format!("{}\n\n{marked}\n", old.trim_end()),
    };
    fs::write(&out, &doc).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    eprintln!("wrote {}", out.display());
    if marked.contains("MISSED") {
        return Err("the gateway missed a target (see docs/benchmarks.md)".into());
    }
    Ok(())
}

/// CPU model, core count, memory and compiler, for the benchmark page.
fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or_else(
            || "unknown CPU".to_owned(),
            |l| l.trim_start_matches([' ', '\t', ':']).to_owned(),
        );
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024 / 1024);
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{model}, {cores} cores, {mem_gib} GiB, {rustc}, `--release` (bench profile)")
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn parses_test_result_lines() {
        let t = Tally::parse(
            "test result: ok. 55 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1.40s",
        );
        assert_eq!(
            t,
            Some(Tally {
                passed: 55,
                failed: 2,
                ignored: 1
            })
        );
        assert_eq!(Tally::parse("running 55 tests"), None);
        assert_eq!(
            Tally {
                passed: 3,
                failed: 0,
                ignored: 1
            }
            .line(),
            "tests: 3 passed, 0 failed, 1 skipped"
        );
    }
}
