//! The configuration file: the issue's example as written, errors that name
//! the field and line, prices files, transport settings.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::harness::build_config as build;
use gateway::config::Config;
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

const PROVIDER: &str = "[[providers]]\nname = \"p\"\nbase_url = \"http://x/v1\"\nkeys = [{ name = \"k\", secret = \"${K}\" }]\n";

fn key_env() -> HashMap<String, String> {
    [("K".to_owned(), "sk-some-key-0123456789abcdef".to_owned())].into()
}

/// The model `client`'s gpt-4.1 rollout gives `subject` (with a client
/// key's name).
fn assign(client: &gateway_client::Client, subject: &str, key: Option<&str>) -> String {
    client
        .with_rollout("gpt-4.1", |r, _| {
            let mut ctx = canary::Context::new(subject);
            ctx.key_name = key;
            r.assign(&ctx).unwrap().model.to_string()
        })
        .unwrap()
}

/// A LiteLLM price list in `dir`.
fn litellm_prices(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("model_prices_and_context_window.json");
    std::fs::write(
        &path,
        r#"{
  "sample_spec": {"input_cost_per_token": 0, "output_cost_per_token": 0},
  "my-relay-model": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
                     "cache_read_input_token_cost": 1.25e-06,
                     "max_input_tokens": 200000, "max_output_tokens": 8192},
  "dall-e-3": {"output_cost_per_image": 0.04}
}"#,
    )
    .unwrap();
    path
}

/// The operators' example of the configuration reference, as written, with
/// LiteLLM's price list as the prices file.
#[test]
fn the_operators_example_works_as_written() {
    let dir = std::env::temp_dir().join(format!("gateway-operators-{}", std::process::id()));
    let prices = litellm_prices(&dir);
    let text = format!(
        r#"{PROVIDER}
[[canary]]
model = "gpt-4.1"
candidate = "claude-sonnet-4.5"
percent = 10
salt = "launch-1"
scheme = "seed-100"          # or "seed-1000", default "salted"
allow = ["qa-user-1"]        # always the candidate
deny = ["vip-42"]            # always the baseline
rules = [{{ key_name_contains = "test", arm = "candidate" }}]
schedule = [{{ percent = 10, hold_secs = 3600 }}, {{ percent = 50, hold_secs = 3600 }}, {{ percent = 100 }}]
analysis = {{ enabled = true, interval_secs = 60, min_requests = 100, max_error_rate_increase = 0.01, max_p95_factor = 1.5 }}

[context]
truncate = true
fallback_models = {{ "gpt-4o-mini" = "gpt-4.1" }}

[budget]
prices_file = "{}"
"#,
        prices.display()
    );
    let config = Config::parse(&text, Path::new("gw.toml")).unwrap();
    let built = build(&config, &key_env()).unwrap();
    let lines = built.understood.lines.join("\n");
    assert!(
        lines.contains("canary gpt-4.1 → claude-sonnet-4.5 at 10% (judged)"),
        "{lines}"
    );
    assert!(
        lines.contains("context: oldest turns dropped to fit, gpt-4o-mini → gpt-4.1"),
        "{lines}"
    );
    assert!(
        built
            .understood
            .models
            .iter()
            .any(|m| m == "my-relay-model")
    );
    let price = built
        .client
        .with_ledger(|l, _| l.prices().resolve("my-relay-model").map(|r| r.price).ok())
        .flatten()
        .unwrap();
    assert_eq!(price.input_per_mtok, budget::Money::from_micros(2_500_000));
    assert_eq!(price.output_per_mtok, budget::Money::from_dollars(10));
    assert_eq!(price.max_output_tokens, Some(8192));
    let assign = |subject: &str, key: Option<&str>| assign(&built.client, subject, key);
    assert_eq!(assign("qa-user-1", None), "claude-sonnet-4.5", "allowed");
    assert_eq!(
        assign("vip-42", Some("test-key")),
        "gpt-4.1",
        "denied beats the rule"
    );
    assert_eq!(
        assign("anyone", Some("ci-test-runner")),
        "claude-sonnet-4.5",
        "the rule"
    );
    // The seed scheme: md5("customer_12345") % 100 = 51, not under 10.
    assert_eq!(assign("customer_12345", None), "gpt-4.1");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every pool and retry setting is read.
#[test]
fn operator_settings_are_read_and_bad_values_name_their_field() {
    let text = format!(
        "{PROVIDER}[pool]\nsoft_fraction = 0.75\nrate_limit_cooldown_secs = 12\nlease_timeout_secs = 90\nkey_min_length = 8\n[pool.breaker]\nconsecutive_failures = 3\ncooldown_secs = 20\nmax_cooldown_secs = 40\n[retry]\nbase_backoff_ms = 50\nmax_backoff_ms = 400\n"
    );
    let config = Config::parse(&text, Path::new("gw.toml")).unwrap();
    let client = build(&config, &key_env()).unwrap().client;
    let pool = client.read_pool("p", |p| p.config().clone()).unwrap();
    assert!((pool.soft_limit - 0.75).abs() < 1e-9);
    assert_eq!(pool.rate_limit_cooldown, Duration::from_secs(12));
    assert_eq!(pool.lease_timeout, Duration::from_secs(90));
    assert_eq!(pool.key_rule.min_len, 8);
    assert_eq!(pool.breaker.consecutive_failures, 3);
    assert_eq!(pool.breaker.cooldown, Duration::from_secs(20));
    assert_eq!(pool.breaker.max_cooldown, Duration::from_secs(40));
}

/// A bad value of any operator setting is an error naming its field.
#[test]
fn bad_operator_settings_name_their_field() {
    for (bad, field) in [
        ("[pool]\nsoft_fraction = 1.5\n", "pool.soft_fraction"),
        ("[pool]\nkey_min_length = 0\n", "pool.key_min_length"),
        (
            "[pool.breaker]\nfailure_rate_percent = 0\n",
            "pool.breaker.failure_rate_percent",
        ),
        (
            "[pool.breaker]\ncooldown_secs = 600\nmax_cooldown_secs = 60\n",
            "pool.breaker.max_cooldown_secs",
        ),
        (
            "[retry]\nbase_backoff_ms = 500\nmax_backoff_ms = 100\n",
            "retry.max_backoff_ms",
        ),
        ("[retry]\nmax_attempts = 0\n", "retry.max_attempts"),
        ("[budget]\nanomaly_factor = 0.5\n", "budget.anomaly_factor"),
        (
            "[budget]\nreservation_ttl_secs = 0\n",
            "budget.reservation_ttl_secs",
        ),
        (
            "[context]\nfallback_models = { \"a\" = \"a\" }\n",
            "context.fallback_models",
        ),
        (
            "[[canary]]\nmodel = \"a\"\ncandidate = \"b\"\npercent = 5\nrules = [{ key_name_contains = \"x\", team_equals = \"y\", arm = \"candidate\" }]\n",
            "canary[0].rules[0]",
        ),
        (
            "[[canary]]\nmodel = \"a\"\ncandidate = \"b\"\npercent = 5\nrules = [{ header = \"x-beta\", equals = \"1\", arm = \"c\" }]\n",
            "canary[0].rules[0].arm",
        ),
        (
            "[[canary]]\nmodel = \"a\"\ncandidate = \"b\"\nschedule = [{ percent = 50, hold_secs = 1 }, { percent = 10 }]\n",
            "canary[0].schedule",
        ),
        (
            "[[canary]]\nmodel = \"a\"\ncandidate = \"b\"\nschedule = [{ percent = 5 }, { percent = 10 }]\n",
            "canary[0].schedule[0].hold_secs",
        ),
        (
            "[[canary]]\nmodel = \"a\"\ncandidate = \"b\"\npercent = 20\nschedule = [{ percent = 5, hold_secs = 1 }, { percent = 10 }]\n",
            "canary[0].percent",
        ),
        (
            "[[canary]]\nmodel = \"a\"\ncandidate = \"b\"\npercent = 5\nanalysis = { max_p95_factor = 0.5 }\n",
            "canary[0].analysis.max_p95_factor",
        ),
        (
            "[[canary]]\nmodel = \"a\"\npercent = 5\n",
            "canary[0].candidate",
        ),
        (
            "[telemetry]\notlp_endpoint = \"collector:4318\"\n",
            "telemetry.otlp_endpoint",
        ),
    ] {
        let config = Config::parse(&format!("{PROVIDER}{bad}"), Path::new("gw.toml")).unwrap();
        let e = build(&config, &key_env()).unwrap_err().to_string();
        assert!(e.starts_with(field), "{bad}: {e}");
    }
    let e = Config::parse(
        &format!("{PROVIDER}[budget]\nweek_start = \"someday\"\n"),
        Path::new("gw.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("week_start"), "{e}");
    let dir = std::env::temp_dir().join(format!("gateway-bad-prices-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("p.json"), "{ \"m\": [1, 2 }").unwrap();
    let text = format!(
        "{PROVIDER}[budget]\nprices_file = \"{}\"\n",
        dir.join("p.json").display()
    );
    let config = Config::parse(&text, Path::new("gw.toml")).unwrap();
    let e = build(&config, &key_env()).unwrap_err().to_string();
    assert!(e.starts_with("budget.prices_file"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `gateway check` says where traces go, without the endpoint's credentials.
#[test]
fn check_says_where_traces_go_without_credentials() {
    let text = format!(
        "{PROVIDER}[telemetry]\notlp_endpoint = \"https://user:s3cret@collector.internal:4318/v1/traces\"\nservice_name = \"gw-eu\"\n"
    );
    let config = Config::parse(&text, Path::new("gw.toml")).unwrap();
    let lines = build(&config, &key_env())
        .unwrap()
        .understood
        .lines
        .join("\n");
    assert!(
        lines
            .contains("traces: exported over OTLP to https://collector.internal:4318 as \"gw-eu\""),
        "{lines}"
    );
    assert!(!lines.contains("s3cret"), "{lines}");
}
