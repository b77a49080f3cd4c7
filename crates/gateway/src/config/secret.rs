//! Secrets in the file: `${ENV_VAR}`, `secret_file`, or (with a warning) literal.

use std::collections::HashMap;
use std::path::Path;

use super::ConfigError;

/// Where a secret came from, for the warning about literal secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// `${ENV_VAR}`.
    Env,
    /// `secret_file`.
    File,
    /// Written in the file.
    Literal,
}

/// Resolves a `secret` (`${VAR}` or literal) or `secret_file` through `env`.
pub fn resolve_secret(
    field: &str,
    secret: Option<&str>,
    file: Option<&Path>,
    env: &HashMap<String, String>,
) -> Result<(String, SecretSource), ConfigError> {
    match (secret, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            field,
            "give either secret or secret_file, not both",
        )),
        (None, None) => Err(ConfigError::new(
            field,
            "needs secret = \"${ENV_VAR}\" or secret_file = \"path\"",
        )),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(
                    format!("{field}_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            Ok((text.trim_end().to_owned(), SecretSource::File))
        }
        (Some(s), None) => match s.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
            Some(var) => env
                .get(var)
                .filter(|v| !v.is_empty())
                .map(|v| (v.clone(), SecretSource::Env))
                .ok_or_else(|| {
                    ConfigError::new(field, format!("environment variable {var} is not set"))
                }),
            None => Ok((s.to_owned(), SecretSource::Literal)),
        },
    }
}
