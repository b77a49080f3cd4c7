//! The official SDKs the end-to-end tests drive the gateway with,
//! installed under `target/sdk/` at pinned versions: the `openai` Python
//! package in a virtual environment, and the `openai` Node package.
//! Nothing is installed twice: a folder that holds the pinned version is
//! kept.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, root};

/// The `openai` package on `PyPI`.
const OPENAI_PYTHON: &str = "3.57.0";
/// The `openai` package on npm.
const OPENAI_NODE: &str = "7.59.0";

/// Where the SDKs are, for the tests' environment.
pub(crate) struct Sdks {
    /// The virtual environment's Python.
    pub(crate) python: PathBuf,
    /// The `node_modules` folder (for `NODE_PATH`).
    pub(crate) node_modules: PathBuf,
}

/// Installs what is missing and says where everything is.
pub(crate) fn install() -> Result<Sdks> {
    let dir = root().join("target").join("sdk");
    let python = python(&dir.join("python"))?;
    let node_modules = node(&dir.join("node"))?;
    Ok(Sdks {
        python,
        node_modules,
    })
}

fn run(program: &Path, args: &[&str], dir: &Path) -> Result<String> {
    eprintln!("$ {} {}", program.display(), args.join(" "));
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {} failed:\n{}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A virtual environment in `venv` with the pinned `openai`.
fn python(venv: &Path) -> Result<PathBuf> {
    let python = venv.join("bin").join("python");
    let version = |p: &Path| {
        run(
            p,
            &["-c", "import openai; print(openai.__version__)"],
            &root(),
        )
        .ok()
    };
    if python.exists() && version(&python).as_deref() == Some(OPENAI_PYTHON) {
        return Ok(python);
    }
    fs::create_dir_all(venv).map_err(|e| format!("cannot create {}: {e}", venv.display()))?;
    let venv_arg = venv.display().to_string();
    run(Path::new("python3"), &["-m", "venv", &venv_arg], &root())?;
    let spec = format!("openai=={OPENAI_PYTHON}");
    run(
        &python,
        &[
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            &spec,
        ],
        &root(),
    )?;
    Ok(python)
}

/// `dir/node_modules` with the pinned `openai`.
fn node(dir: &Path) -> Result<PathBuf> {
    let modules = dir.join("node_modules");
    let manifest = modules.join("openai").join("package.json");
    let installed = fs::read_to_string(&manifest)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("version")?.as_str().map(str::to_owned));
    if installed.as_deref() == Some(OPENAI_NODE) {
        return Ok(modules);
    }
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    fs::write(dir.join("package.json"), "{\"private\": true}\n")
        .map_err(|e| format!("cannot write {}: {e}", dir.display()))?;
    let spec = format!("openai@{OPENAI_NODE}");
    run(
        Path::new("npm"),
        &["install", "--no-audit", "--no-fund", "--silent", &spec],
        dir,
    )?;
    Ok(modules)
}
