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

/// The fields whose values are secrets.
const SECRET_FIELDS: [&str; 4] = ["secret", "master_key", "secrets_key", "url"];

/// `message` with every literal secret written in `file` (the quoted value
/// of a `secret` or `master_key`, `${ENV}` references aside) replaced by
/// `<redacted>`.
pub(super) fn redact(message: &str, file: &str) -> String {
    let mut out = message.to_owned();
    for value in literal_secrets(file) {
        out = out.replace(value, "<redacted>");
    }
    out
}

/// The quoted values of secret fields in `file`, read without parsing it
/// (it may not parse): `secret = "…"` wherever it stands on a line.
fn literal_secrets(file: &str) -> Vec<&str> {
    let mut found = Vec::new();
    for field in SECRET_FIELDS {
        let mut rest = file;
        while let Some(i) = rest.find(field) {
            rest = &rest[i + field.len()..];
            let Some(after) = rest.trim_start().strip_prefix('=') else {
                continue;
            };
            let after = after.trim_start();
            let Some(quote) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
                continue;
            };
            let value = &after[1..];
            if let Some(end) = value.find(quote) {
                let value = &value[..end];
                if !value.is_empty() && !value.starts_with("${") {
                    found.push(value);
                }
            }
        }
    }
    // Longest first, so that a secret containing another is redacted whole.
    found.sort_by_key(|v| std::cmp::Reverse(v.len()));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_secrets_are_redacted_and_references_are_not() {
        let file = "keys = [{ name = \"k\", secret = \"sk-live-0123456789\", tier = \"x\" }]\nmaster_key='m-key-abcdefghijklmnop'\nsecret = \"${KEY}\"\n";
        let message =
            "invalid type: string \"sk-live-0123456789\" near m-key-abcdefghijklmnop and ${KEY}";
        assert_eq!(
            redact(message, file),
            "invalid type: string \"<redacted>\" near <redacted> and ${KEY}"
        );
    }
}
