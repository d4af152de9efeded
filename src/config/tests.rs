use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/olive/olive.toml"))
}

fn fields(text: &str) -> Vec<String> {
    parse(text).unwrap_err().errors.into_iter().map(|e| e.field).collect()
}

const MINIMAL: &str = r#"
[[listener]]
name = "http"
kind = "http"
bind = "127.0.0.1:8080"

[[upstream]]
name = "django"
addresses = ["127.0.0.1:8000", "unix:run/gunicorn.sock"]

[[route]]
path = "/"
proxy.upstream = "django"
"#;

#[test]
fn minimal_file_gets_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.limits.max_body_bytes, file::DEFAULT_MAX_BODY_BYTES);
    assert_eq!(c.upstreams[0].connect_timeout, file::DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(c.upstreams[0].addresses[1], UpstreamAddr::Unix("/etc/olive/run/gunicorn.sock".into()));
    assert!(matches!(c.routes[0].action, Action::Proxy { upstream: 0, compress: true, tunnel: None }));
    assert_eq!(c.unmatched_status, StatusCode::MISDIRECTED_REQUEST);
}

#[test]
fn unknown_keys_are_errors() {
    let err = parse(&format!("{MINIMAL}\n[limits]\nmax_body = 3\n")).unwrap_err();
    assert!(err.errors[0].message.contains("unknown field `max_body`"), "{err}");
    assert_eq!(err.errors[0].field, "line 16, column 1");
}

#[test]
fn every_error_is_reported_with_its_field() {
    let text = r#"
[server]
trusted_proxies = ["10.0.0.0/8", "nonsense"]

[limits]
body_buffer_bytes = 100
max_body_bytes = 10

[[listener]]
name = "tls"
kind = "https"
bind = "not an address"

[[route]]
path = "static/"
proxy.upstream = "missing"
"#;
    assert_eq!(
        fields(text),
        [
            "server.trusted_proxies[1]",
            "limits.body_buffer_bytes",
            "listener[0].bind",
            "certificate",
            "route[0].path",
            "route[0].proxy.upstream",
        ]
    );
}

#[test]
fn a_route_has_exactly_one_action() {
    let text = format!("{MINIMAL}\n[[route]]\npath = \"/x\"\n");
    assert_eq!(fields(&text), ["route[1].path"]);
}

#[test]
fn missing_certificate_is_an_error_unless_self_signed_is_allowed() {
    let tls = r#"
[[listener]]
name = "tls"
kind = "https"
bind = "127.0.0.1:8443"

[[certificate]]
cert = "/nonexistent/cert.pem"
key = "/nonexistent/key.pem"
"#;
    assert_eq!(fields(tls), ["certificate[0].cert", "certificate[0].key"]);
    let dev = format!("{tls}self_signed_if_missing = true\n");
    assert!(parse(&dev).is_ok());
}

#[test]
fn host_patterns() {
    let exact = HostPattern::Exact("example.com".into());
    let suffix = HostPattern::Suffix(".example.com".into());
    for (host, e, s) in [
        ("example.com", true, false),
        ("EXAMPLE.com", true, false),
        ("www.example.com", false, true),
        ("a.b.Example.COM", false, true),
        ("badexample.com", false, false),
        (".example.com", false, false),
    ] {
        assert_eq!(exact.matches(host), e, "{host}");
        assert_eq!(suffix.matches(host), s, "{host}");
    }
}

/// The documented example must stay in step with the code: it may only fail
/// for files that exist on a real server, not here.
#[test]
fn the_documented_example_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/olive.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let env = |name: &str| (name == "OLIVE_TOKEN_SECRET").then(|| "x".repeat(32));
    let err = Config::parse_with_env(&text, &path, &env).unwrap_err();
    for e in &err.errors {
        assert!(
            e.message.ends_with("does not exist") || e.message.ends_with("is not a directory"),
            "{}: {}",
            e.field,
            e.message
        );
    }
}

/// The example's `[live.amqp]` table, validated as the amqp broker would.
#[test]
fn the_documented_amqp_table_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/olive.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace("[live.amqp]", "[live]\nbroker = \"amqp\"\n[live.amqp]");
    let env = |name: &str| (name == "OLIVE_AMQP_URL").then(|| file::DEFAULT_AMQP_URL.to_owned());
    let err = Config::parse_with_env(&text, &path, &env).unwrap_err();
    assert!(err.errors.iter().all(|e| !e.field.starts_with("live")), "{err}");
}

/// The errors of `config/{name}`, parsed with `env`, other than those
/// about files that exist only on a real server.
fn example_errors(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let errors = match Config::parse_with_env(&text, &path, env) {
        Ok(_) => return Vec::new(),
        Err(err) => err.errors,
    };
    errors
        .into_iter()
        .filter(|e| !(e.message.ends_with("does not exist") || e.message.ends_with("is not a directory")))
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect()
}

#[test]
fn the_single_node_example_parses() {
    let errors = example_errors("examples/single-node.toml", &|_| None);
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn the_cluster_node_example_parses_with_its_amqp_url_from_the_environment() {
    let env =
        |name: &str| (name == "OLIVE_AMQP_URL").then(|| "amqp://olive:s3cret@rabbit:5672/site".to_owned());
    let errors = example_errors("examples/cluster-node.toml", &env);
    assert!(errors.is_empty(), "{errors:?}");
    // The amqp broker is on: without the variable the URL is missing.
    let errors = example_errors("examples/cluster-node.toml", &|_| None);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("live.amqp.url_env: "), "{errors:?}");
}

#[test]
fn the_dev_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dev.toml");
    let config = Config::load(&path).unwrap();
    let binds: Vec<String> = config.listeners.iter().map(|l| l.bind.to_string()).collect();
    assert_eq!(binds, ["127.0.0.1:8080", "127.0.0.1:8443", "127.0.0.1:9090"]);
    // Anonymous visitors may watch the demo keys, and nothing else.
    let demo = crate::live::key::Pattern::parse("olive.demo.room.*").unwrap();
    let other = crate::live::key::Pattern::parse("olive.notes.note.1").unwrap();
    let anonymous = &config.auth.anonymous;
    assert!(anonymous.may_subscribe(&demo) && !anonymous.may_subscribe(&other));
    assert!(anonymous.publish.is_empty());
    assert!(config.auth.keys.is_empty());
}

const LISTENER: &str = "[[listener]]\nname = \"http\"\nkind = \"http\"\nbind = \"127.0.0.1:0\"\n";

#[test]
fn auth_defaults_grant_nothing() {
    let config = parse(LISTENER).unwrap();
    assert!(config.auth.anonymous.is_empty());
    assert!(config.auth.keys.is_empty() && config.auth.admin_token.is_none());
    assert_eq!((config.auth.audience.as_str(), config.auth.issuer.as_str()), ("olive", "django"));
}

#[test]
fn auth_errors_name_their_fields() {
    let text = format!(
        r#"{LISTENER}
[auth]
max_grants = 0
allowed_origins = ["https://ok.example", "example.com", "https://x.example/path"]
admin_token_env = "A"
admin_token_file = "a"
anonymous = {{ subscribe = ["olive..x"] }}

[[auth.key]]
kid = "short"
algorithm = "HS256"
secret_env = "SHORT"

[[auth.key]]
kid = "mixed"
algorithm = "RS256"
secret_env = "LONG"

[[auth.key]]
kid = "missing"
algorithm = "EdDSA"
public_key_file = "/nonexistent/key.pem"

[[auth.key]]
kid = "unset"
algorithm = "HS256"
secret_env = "UNSET"

[[auth.key]]
kid = "good"
algorithm = "HS256"
secret_env = "LONG"

[[auth.key]]
kid = "good"
algorithm = "HS256"
secret_env = "LONG"
"#
    );
    let long = "k".repeat(32);
    let errors = errors_of(parse_env(&text, &[("SHORT", "k"), ("LONG", &long)]));
    let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "auth.key[0].secret_env",
            "auth.key[1].secret_env",
            "auth.key[1].public_key_file",
            "auth.key[2].public_key_file",
            "auth.key[3].secret_env",
            "auth.key[5].kid",
            "auth.max_grants",
            "auth.allowed_origins[1]",
            "auth.allowed_origins[2]",
            "auth.anonymous",
            "auth.admin_token_env",
        ],
        "{errors:?}"
    );
    assert!(errors.iter().all(|(_, m)| !m.contains(&long)), "a secret leaked into a message: {errors:?}");
}

#[test]
fn auth_keys_load_from_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), format!("{}\n", "s".repeat(40))).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    std::fs::write(dir.path().join("ed.pem"), key.public_key_pem()).unwrap();
    std::fs::write(dir.path().join("admin"), "tok\n").unwrap();
    let text = format!(
        r#"{LISTENER}
[auth]
admin_token_file = "admin"
[[auth.key]]
kid = "h"
algorithm = "HS256"
secret_file = "secret"
[[auth.key]]
kid = "e"
algorithm = "EdDSA"
public_key_file = "ed.pem"
[[auth.key]]
kid = "wrong"
algorithm = "ES256"
public_key_file = "ed.pem"
"#
    );
    let path = dir.path().join("olive.toml");
    let errors = errors_of(Config::parse(&text, &path));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "auth.key[2].public_key_file");
    let config =
        Config::parse(&text.replace("ES256", "EdDSA").replace("\"wrong\"", "\"e2\""), &path).unwrap();
    assert_eq!(
        config.auth.keys[0].secret.as_ref().unwrap().0,
        "s".repeat(40).into_bytes(),
        "newline trimmed"
    );
    assert_eq!(config.auth.admin_token.as_ref().unwrap().0, b"tok");
}

fn parse_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
    Config::parse_with_env(text, Path::new("/etc/olive/olive.toml"), &env)
}

fn errors_of(result: Result<Config, ConfigError>) -> Vec<(String, String)> {
    result.unwrap_err().errors.into_iter().map(|e| (e.field, e.message)).collect()
}

#[test]
fn amqp_settings_only_with_the_amqp_broker() {
    let memory = parse(&format!("{MINIMAL}\n[live.amqp]\nurl_env = \"UNSET\"\n")).unwrap();
    assert!(memory.amqp.is_none(), "a memory broker ignores an unset url_env");
    let c = parse(&format!("{MINIMAL}\n[live]\nbroker = \"amqp\"\n")).unwrap();
    let amqp = c.amqp.unwrap();
    assert_eq!(amqp.url, file::DEFAULT_AMQP_URL);
    assert_eq!(amqp.exchange, "olive");
    assert_eq!(amqp.reconnect_max, file::DEFAULT_AMQP_RECONNECT_MAX);
    assert!(!format!("{amqp:?}").contains("guest:guest"), "the password stays out of Debug");
}

#[test]
fn amqp_url_from_env_or_file() {
    let text = format!("{MINIMAL}\n[live]\nbroker = \"amqp\"\namqp.url_env = \"OLIVE_AMQP_URL\"\n");
    let c = parse_env(&text, &[("OLIVE_AMQP_URL", "amqp://u:p@rabbit:5672/site")]).unwrap();
    assert_eq!(c.amqp.unwrap().url, "amqp://u:p@rabbit:5672/site");

    let errors = errors_of(parse_env(&text, &[]));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, "live.amqp.url_env");
    assert!(errors[0].1.contains("OLIVE_AMQP_URL"), "{}", errors[0].1);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("amqp-url"), "amqp://u:p@rabbit:5672/%2f\n").unwrap();
    let path = dir.path().join("olive.toml");
    let text = format!("{MINIMAL}\n[live]\nbroker = \"amqp\"\namqp.url_file = \"amqp-url\"\n");
    let c = Config::parse(&text, &path).unwrap();
    assert_eq!(c.amqp.unwrap().url, "amqp://u:p@rabbit:5672/%2f", "relative to the file, trimmed");
}

#[test]
fn amqp_errors_name_their_fields() {
    let text = format!(
        "{MINIMAL}\n[live]\nbroker = \"amqp\"\n[live.amqp]\nurl = \"http://secret@x\"\nexchange = \"\"\n\
         queue_prefix = \"amq.mine\"\nreconnect_min = \"5s\"\nreconnect_max = \"1s\"\nconfirm_timeout = \"0s\"\n\
         queue_expires = \"5s\"\nprefetch = 0\n"
    );
    let errors = errors_of(parse(&text));
    let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "live.amqp.url",
            "live.amqp.exchange",
            "live.amqp.queue_prefix",
            "live.amqp.reconnect_max",
            "live.amqp.confirm_timeout",
            "live.amqp.queue_expires",
            "live.amqp.prefetch"
        ]
    );
    assert!(!errors[0].1.contains("secret"), "the URL is not echoed: {}", errors[0].1);

    let both =
        format!("{MINIMAL}\n[live]\nbroker = \"amqp\"\namqp.url = \"amqp://h\"\namqp.url_env = \"X\"\n");
    assert_eq!(fields_of_env(&both), ["live.amqp.url"]);
    let tls = format!("{MINIMAL}\n[live]\nbroker = \"amqp\"\namqp.url = \"amqps://h\"\n");
    assert_eq!(fields_of_env(&tls), ["live.amqp.url"]);
    let typo = format!("{MINIMAL}\n[live.amqp]\nexchnage = \"x\"\n");
    assert!(parse(&typo).unwrap_err().errors[0].message.contains("unknown field"));
}

fn fields_of_env(text: &str) -> Vec<String> {
    errors_of(parse_env(text, &[("X", "amqp://h")])).into_iter().map(|(f, _)| f).collect()
}

#[test]
fn recovery_url_must_be_absolute_http() {
    for url in ["/olive/recover/", "https://example.com/recover/", "not a url"] {
        let text = format!("{MINIMAL}\n[[route]]\npath = \"/olive\"\nlive.recovery_url = \"{url}\"\n");
        assert_eq!(fields(&text), ["route[1].live.recovery_url"], "{url}");
    }
    let ok = format!(
        "{MINIMAL}\n[[route]]\npath = \"/olive\"\nlive.recovery_url = \"http://127.0.0.1:8000/r/\"\n"
    );
    assert!(parse(&ok).is_ok());
}

#[test]
fn presence_settings_are_checked() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.live.presence_ttl, file::DEFAULT_PRESENCE_TTL);
    assert_eq!(c.live.presence_max_members, file::DEFAULT_PRESENCE_MAX_MEMBERS);
    let bad = format!(
        "{MINIMAL}\n[live]\npresence_heartbeat = \"0s\"\npresence_ttl = \"5s\"\npresence_count_interval = \"0s\"\n"
    );
    assert_eq!(fields(&bad), ["live.presence_heartbeat", "live.presence_count_interval"]);
    let bad = format!("{MINIMAL}\n[live]\npresence_heartbeat = \"10s\"\npresence_ttl = \"10s\"\n");
    assert_eq!(fields(&bad), ["live.presence_ttl"]);
}

#[test]
fn rate_limits_and_proxy_protocol_are_checked() {
    let text = r#"
[[listener]]
name = "lb"
kind = "http"
bind = "127.0.0.1:0"
proxy_protocol = true

[auth]
max_revoked = 0

[rate_limits]
http_per_ip = 10
http_burst = 0
connects_per_ip = 0
connects_burst = 0
tracked_clients = 0
"#;
    assert_eq!(
        fields(text),
        [
            "listener[0].proxy_protocol",
            "auth.max_revoked",
            "rate_limits.http_per_ip",
            "rate_limits.tracked_clients"
        ]
    );
}

#[test]
fn zero_h2_limits_are_errors() {
    let limits = "[limits]\nh2_max_concurrent_streams = 0\nh2_max_pending_accept_reset_streams = 0\n\
                  h2_max_local_error_reset_streams = 0\nh2_max_send_buf_bytes = 0\nh2_keep_alive_timeout = \"0s\"\n";
    let mut got = fields(&format!("{limits}{MINIMAL}"));
    got.sort();
    assert_eq!(
        got,
        [
            "limits.h2_keep_alive_timeout",
            "limits.h2_max_concurrent_streams",
            "limits.h2_max_local_error_reset_streams",
            "limits.h2_max_pending_accept_reset_streams",
            "limits.h2_max_send_buf_bytes",
        ]
    );
    // A zero interval turns pings off; it is not an error.
    assert!(parse(&format!("[limits]\nh2_keep_alive_interval = \"0s\"\n{MINIMAL}")).is_ok());
}
