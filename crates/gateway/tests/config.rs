//! The configuration file: the issue's example as written, errors that name
//! the field and line, prices files, transport settings.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use gateway::config::Config;

/// Builds the layers from a config with a mock transport, as `gateway check` does.
fn build(
    config: &Config,
    env: &HashMap<String, String>,
) -> Result<gateway::config::Built, gateway::config::ConfigError> {
    gateway::config::build(
        config,
        env,
        std::sync::Arc::new(transport::MockTransport::new()),
        None,
    )
}

#[test]
fn the_issue_config_works_as_written() {
    let text = r#"
[server]
listen = "127.0.0.1:9000"

[[providers]]
name = "relay"
base_url = "http://127.0.0.1:18000/v1"
priority = 0
strategy = "least-used"
keys = [
  { name = "prod-1", secret = "${KEY_1}", tokens_per_day = 5000000 },
  { name = "prod-2", secret = "${KEY_2}" },
  { name = "backup", secret = "${KEY_3}", tier = 1 },
]

[[canary]]
model = "gpt-4.1"
candidate = "claude-sonnet-4.5"
percent = 10
salt = "launch-1"

[budget]
utc_offset = "+07:00"
limits = [{ scope = "global", daily_usd = 100.0, soft_fraction = 0.8, fallback_model = "gpt-4o-mini" }]

[auth]
mode = "none"
"#;
    let config = Config::parse(text, Path::new("gateway.toml")).unwrap();
    let env: HashMap<String, String> = (1..=3)
        .map(|i| (format!("KEY_{i}"), format!("sk-relay-key-{i:020}")))
        .collect();
    let understood = build(&config, &env).unwrap().understood;
    let text = understood.lines.join("\n");
    assert!(
        text.contains("provider relay key backup (sk-…0003) tier 1"),
        "{text}"
    );
    assert!(
        text.contains("canary gpt-4.1 → claude-sonnet-4.5 at 10%"),
        "{text}"
    );
    assert!(text.contains("budget global daily $100.00"), "{text}");
    assert!(
        text.contains("storage: in memory only"),
        "without [storage] the gateway says state is not kept: {text}"
    );
    assert!(
        !text.contains("00000000000000000001"),
        "secrets are redacted"
    );
}

#[test]
fn config_errors_name_the_field_and_line() {
    let bad = "[server]\nlisten = \"127.0.0.1:9000\"\ncolour = \"blue\"\n";
    let e = Config::parse(bad, Path::new("gw.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("gw.toml:") && e.contains("line 3") && e.contains("unknown field `colour`"),
        "{e}"
    );
    let missing = "[[providers]]\nname = \"p\"\nbase_url = \"http://x/v1\"\nkeys = [{ name = \"k\", secret = \"${NOPE}\" }]\n";
    let c = Config::parse(missing, Path::new("gw.toml")).unwrap();
    let e = build(&c, &HashMap::new()).unwrap_err().to_string();
    assert_eq!(
        e,
        "providers[0].keys[0].secret: environment variable NOPE is not set"
    );
    let open = "[server]\nlisten = \"0.0.0.0:9000\"\n[auth]\nmode = \"none\"\n[[providers]]\nname = \"p\"\nbase_url = \"http://x/v1\"\nkeys = [{ name = \"k\", secret = \"sk-literal-0123456789abcdef\" }]\n";
    let c = Config::parse(open, Path::new("gw.toml")).unwrap();
    let e = build(&c, &HashMap::new()).unwrap_err().to_string();
    assert!(e.contains("only allowed on a loopback address"), "{e}");
    let literal = open.replace("0.0.0.0", "127.0.0.1");
    let c = Config::parse(&literal, Path::new("gw.toml")).unwrap();
    let u = build(&c, &HashMap::new()).unwrap().understood;
    assert!(u.warnings[0].contains("literal secret"), "{:?}", u.warnings);
}

#[test]
fn models_from_a_prices_file_are_served() {
    let dir = std::env::temp_dir().join(format!("gateway-prices-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prices = dir.join("prices.toml");
    std::fs::write(
        &prices,
        "[models.\"local-llama\"]\ninput_per_mtok = \"0\"\noutput_per_mtok = \"0\"\n",
    )
    .unwrap();
    let text = format!(
        "[[providers]]\nname = \"p\"\nbase_url = \"http://x/v1\"\nkeys = [{{ name = \"k\", secret = \"${{K}}\" }}]\n[budget]\nprices_file = {:?}\n",
        prices.display().to_string()
    );
    let config = Config::parse(&text, Path::new("gw.toml")).unwrap();
    let env: HashMap<String, String> =
        [("K".to_owned(), "sk-some-key-0123456789abcdef".to_owned())].into();
    let understood = build(&config, &env).unwrap().understood;
    assert!(
        understood.models.iter().any(|m| m == "local-llama"),
        "{:?}",
        understood.models
    );
    assert!(understood.models.iter().any(|m| m == "gpt-4.1"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn transport_settings_are_read_and_a_bad_ca_bundle_stops_the_start() {
    let dir = std::env::temp_dir().join(format!("gateway-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bundle = dir.join("not-a-ca.pem");
    std::fs::write(&bundle, "this is not a certificate").unwrap();
    let text = format!(
        "[transport]\nconnect_timeout_secs = 3\nuse_env_proxy = false\nextra_ca_file = \"{}\"\n\n[[providers]]\nname = \"p\"\nbase_url = \"http://127.0.0.1:9/v1\"\nkeys = [{{ name = \"k\", secret = \"${{K}}\" }}]\n",
        bundle.display()
    );
    let config = Config::parse(&text, Path::new("gw.toml")).unwrap();
    let r = config.transport.http();
    assert_eq!(r.connect_timeout, Duration::from_secs(3));
    assert!(!r.use_env_proxy);
    // hyper's client unless a proxy is both allowed and named; only reqwest
    // goes through one.
    let proxied: HashMap<String, String> = [(
        "https_proxy".to_owned(),
        "http://proxy.internal:3128".to_owned(),
    )]
    .into();
    let plain = "[[providers]]\nname = \"p\"\nbase_url = \"http://127.0.0.1:9/v1\"\nkeys = [{ name = \"k\", secret = \"${K}\" }]\n";
    let defaults = Config::parse(plain, Path::new("gw.toml")).unwrap();
    let which = |c: &Config, env: &HashMap<String, String>| {
        gateway::config::upstream_transport(&c.transport, env)
            .unwrap()
            .1
    };
    assert_eq!(
        which(&defaults, &HashMap::new()),
        "hyper (a client per serving thread)"
    );
    assert!(which(&defaults, &proxied).starts_with("reqwest"));
    let no_proxy = Config::parse(
        &format!("[transport]\nuse_env_proxy = false\n\n{plain}"),
        Path::new("gw.toml"),
    )
    .unwrap();
    assert_eq!(
        which(&no_proxy, &proxied),
        "hyper (a client per serving thread)"
    );
    let env: HashMap<String, String> =
        [("K".to_owned(), "sk-test-0123456789abcdef".to_owned())].into();
    let e = gateway::start(&config, &env).await.unwrap_err().to_string();
    assert!(e.contains("not-a-ca.pem"), "{e}");
    let zero = "[server]\nworkers = 0\n";
    let e = Config::parse(zero, Path::new("gw.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("workers") || e.contains("line 2"), "{e}");
    let unknown = "[transport]\ninsecure = true\n";
    let e = Config::parse(unknown, Path::new("gw.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `insecure`"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn key_days_begin_at_the_configured_midnight_and_cooldowns_are_capped() {
    let env: HashMap<String, String> =
        [("K".to_owned(), "sk-some-key-0123456789abcdef".to_owned())].into();
    let provider = "[[providers]]\nname = \"p\"\nbase_url = \"http://x/v1\"\nkeys = [{ name = \"k\", secret = \"${K}\" }]\n";
    let pool_of = |text: &str| {
        let config = Config::parse(text, Path::new("gw.toml")).unwrap();
        let client = build(&config, &env).unwrap().client;
        client
            .read_pool("p", |p| (p.config().utc_offset, p.config().max_cooldown))
            .unwrap()
    };
    let (offset, cooldown) = pool_of(&format!("{provider}[budget]\nutc_offset = \"+07:00\"\n"));
    assert_eq!(
        offset.to_string(),
        "+07:00",
        "the budget's day is the keys' day"
    );
    assert_eq!(cooldown, Duration::from_secs(3600));
    let (offset, cooldown) = pool_of(&format!(
        "{provider}[budget]\nutc_offset = \"+07:00\"\n[pool]\nutc_offset = \"-05:00\"\nmax_cooldown_secs = 600\n"
    ));
    assert_eq!(offset.to_string(), "-05:00", "[pool] says otherwise");
    assert_eq!(cooldown, Duration::from_secs(600));
    for (bad, field) in [
        ("[pool]\nutc_offset = \"Bangkok\"\n", "pool.utc_offset"),
        ("[pool]\nmax_cooldown_secs = 1\n", "pool.max_cooldown_secs"),
    ] {
        let config = Config::parse(&format!("{provider}{bad}"), Path::new("gw.toml")).unwrap();
        let e = build(&config, &env).unwrap_err().to_string();
        assert!(e.starts_with(field), "{e}");
    }
}
