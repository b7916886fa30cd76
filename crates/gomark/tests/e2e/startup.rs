//! A service with a wrong setting refuses to start, names the key, and binds nothing.

use std::process::Command;

fn run(service: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gomark"))
        .args(["run", service])
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run gomark");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_wrong_value_exits_non_zero_naming_it() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("orchestrator", &[("GOMARK__SERVER__GRPC_ADDR", "not-an-address")], "grpc_addr"),
        ("orchestrator", &[("GOMARK__DATABASE__URL", "mysql://x")], "database.url"),
        ("orchestrator", &[], "database.url"),
        (
            "hubspot-sync",
            &[("GOMARK__DATABASE__URL", "sqlite://x.db"), ("GOMARK__HUBSPOT__API_VERSION", "v9")],
            "hubspot.api_version",
        ),
        ("hubspot-sync", &[("GOMARK__DATABASE__URL", "sqlite://x.db")], "hubspot.credential_keys"),
        (
            "hubspot-sync",
            &[("GOMARK__DATABASE__URL", "sqlite://x.db"), ("GOMARK__HUBSPOT__CREDENTIAL_KEYS", "k1:c2hvcnQ=")],
            "hubspot.credential_keys",
        ),
        ("gateway", &[("GOMARK__GATEWAY__ORCHESTRATOR_URL", "orchestrator:50051")], "gateway.orchestrator_url"),
        ("gateway", &[("GOMARK__TELEMETRY__LOG_FORMAT", "xml")], "log_format"),
        ("upso-cadence", &[("GOMARK__SERVER__SHUTDOWN_GRACE_SECS", "0")], "server.shutdown_grace_secs"),
    ];
    for (service, env, key) in cases {
        let (code, stderr) = run(service, env);
        assert_eq!(code, Some(2), "{service} {env:?}: {stderr}");
        assert!(stderr.contains(key), "{service} {env:?} should name {key}: {stderr}");
    }
}

#[test]
fn a_missing_config_file_is_named() {
    let (code, stderr) = run("pipeline-tracker", &[("GOMARK_CONFIG", "/nonexistent/gomark.yaml")]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("/nonexistent/gomark.yaml"), "{stderr}");
}
