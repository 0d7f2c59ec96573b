//! The command line's parsing, defaults and checks.

use super::*;
use secrecy::ExposeSecret;
use std::time::Duration;

#[test]
fn redis_url_stands_in_for_the_valkey_url() {
    let parse = |args: &[&str]| {
        Cli::try_parse_from(args)
            .unwrap()
            .common
            .with_reference_names()
            .valkey_url
    };
    assert_eq!(
        parse(&["streamstock", "migrate", "--redis-url", "redis://r"]).as_deref(),
        Some("redis://r")
    );
    assert_eq!(
        parse(&[
            "streamstock",
            "migrate",
            "--redis-url",
            "redis://r",
            "--valkey-url",
            "redis://v"
        ])
        .as_deref(),
        Some("redis://v"),
        "ours wins"
    );
}

#[test]
fn the_token_file_gives_its_first_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let args = |file: &std::path::Path| {
        let cli = Cli::try_parse_from([
            "streamstock",
            "serve",
            "--api-token-file",
            file.to_str().unwrap(),
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not `serve`")
        };
        args.gateway
    };
    std::fs::write(&file, "  s3cret  \nsecond line\n").unwrap();
    let mut gateway = args(&file);
    gateway.load_token_file().unwrap();
    assert_eq!(
        gateway.api_token.as_ref().map(ExposeSecret::expose_secret),
        Some("s3cret")
    );
    std::fs::write(&file, "\n").unwrap();
    assert!(args(&file)
        .load_token_file()
        .unwrap_err()
        .to_string()
        .contains("empty"));
    assert!(args(&dir.path().join("missing"))
        .load_token_file()
        .unwrap_err()
        .to_string()
        .contains("cannot read"));
    assert!(Cli::try_parse_from([
        "streamstock",
        "serve",
        "--api-token",
        "a",
        "--api-token-file",
        "b"
    ])
    .is_err());
}

#[test]
fn cli_is_well_formed() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn global_flags_go_after_the_subcommand() {
    let cli = Cli::try_parse_from([
        "streamstock",
        "worker",
        "--partitions",
        "4",
        "--valkey-url",
        "redis://x",
    ])
    .unwrap();
    assert_eq!(cli.common.partitions, 4);
    assert!(matches!(cli.command, Command::Worker(_)));
}

#[test]
fn retention_defaults_match_the_command_line() {
    let cli = Cli::try_parse_from(["streamstock", "migrate"]).unwrap();
    let parsed = cli.common.retention;
    let default = RetentionArgs::default();
    assert_eq!(*parsed.log_retention, *default.log_retention);
    assert_eq!(*parsed.per_second_retention, *default.per_second_retention);
    assert_eq!(*parsed.per_minute_retention, *default.per_minute_retention);
    assert_eq!(parsed.sqlite_memory_mib, default.sqlite_memory_mib);
    assert_eq!(parsed.log_segment_bytes, default.log_segment_bytes);
    let cli = Cli::try_parse_from(["streamstock", "migrate", "--log-retention", "90s"]).unwrap();
    assert_eq!(*cli.common.retention.log_retention, Duration::from_secs(90));
    assert!(Cli::try_parse_from(["streamstock", "migrate", "--log-retention", "soon"]).is_err());
}

/// The Python reference's README and compose file spell the profiles
/// in capitals; its users' settings keep working.
#[test]
fn profiles_are_read_in_any_case() {
    for (spelling, expected) in [
        ("NORMAL", Profile::Normal),
        ("Burst", Profile::Burst),
        ("burst", Profile::Burst),
        ("NONE", Profile::None),
    ] {
        let cli = Cli::try_parse_from(["streamstock", "all", "--profile", spelling]).unwrap();
        let Command::All(args) = cli.command else {
            panic!("not `all`")
        };
        assert_eq!(args.profile, expected, "{spelling}");
        let cli = Cli::try_parse_from(["streamstock", "simulate", "--profile", spelling]).unwrap();
        let Command::Simulate(args) = cli.command else {
            panic!("not `simulate`")
        };
        assert_eq!(args.profile, Some(expected), "{spelling}");
    }
    assert!(Cli::try_parse_from(["streamstock", "all", "--profile", "HEAVY"]).is_err());
}

#[test]
fn gateway_and_worker_listen_addresses_have_their_own_variables() {
    use clap::CommandFactory;
    let cli = Cli::command();
    let env_of = |role: &str| {
        let command = cli.find_subcommand(role).unwrap();
        let listen = command
            .get_arguments()
            .find(|a| a.get_id() == "listen")
            .unwrap();
        listen.get_env().unwrap().to_str().unwrap().to_string()
    };
    assert_eq!(env_of("serve"), "STREAMSTOCK_LISTEN");
    assert_eq!(env_of("all"), "STREAMSTOCK_LISTEN");
    assert_eq!(env_of("worker"), "STREAMSTOCK_WORKER_LISTEN");
    for flag in ["--worker-listen", "--listen"] {
        let cli = Cli::try_parse_from(["streamstock", "worker", flag, "127.0.0.1:9101"]).unwrap();
        let Command::Worker(args) = cli.command else {
            panic!("not `worker`")
        };
        assert_eq!(args.listen.port(), 9101, "{flag}");
    }
}

#[test]
fn the_database_password_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db-password");
    std::fs::write(&file, "p@ss word/1\n").unwrap();
    let cli = Cli::try_parse_from([
        "streamstock",
        "--database-url",
        "postgres://shop@db.internal:5432/streamstock",
        "--database-password-file",
        file.to_str().unwrap(),
        "migrate",
    ])
    .unwrap();
    assert_eq!(
        cli.common
            .database_url_with_password()
            .unwrap()
            .expose_secret(),
        "postgres://shop:p%40ss%20word%2F1@db.internal:5432/streamstock"
    );
    let no_user = CommonArgs {
        database_url: Some("postgres://db.internal/streamstock".into()),
        ..cli.common.clone()
    };
    assert!(no_user
        .database_url_with_password()
        .unwrap_err()
        .to_string()
        .contains("no user name"));
    let missing = CommonArgs {
        database_password_file: Some(dir.path().join("absent")),
        ..cli.common
    };
    assert!(missing
        .database_url_with_password()
        .unwrap_err()
        .to_string()
        .contains("cannot read --database-password-file"));
}

#[test]
fn non_loopback_needs_a_token() {
    let args = GatewayArgs {
        listen: "0.0.0.0:8000".parse().unwrap(),
        api_token: None,
        api_token_file: None,
        tokens_file: None,
        public_catalog: false,
        cors_origins: Vec::new(),
        insecure: false,
        max_in_flight_appends: 16,
        max_dashboard_clients: 4,
        max_feed_streams: 4,
        max_in_flight_requests: 16,
        request_timeout: std::time::Duration::from_secs(35).into(),
        idempotency_ttl: std::time::Duration::from_secs(86_400).into(),
        idempotency_max_keys: 1_000_000,
        catalog_cache_products: 100,
        max_locations: 100,
        max_backlog: 100_000,
        connections: Default::default(),
    };
    assert!(args.check_exposure().is_err());
    assert!(GatewayArgs {
        api_token: Some("t".into()),
        ..args.clone()
    }
    .check_exposure()
    .is_ok());
    assert!(GatewayArgs {
        insecure: true,
        ..args
    }
    .check_exposure()
    .is_ok());
}

#[test]
fn durations_are_humantime_and_the_millisecond_spellings_still_work() {
    let processing = |args: &[&str]| -> Result<ProcessingArgs, String> {
        let cli = Cli::try_parse_from([&["streamstock", "worker"], args].concat())
            .map_err(|e| e.to_string())?;
        match cli.command {
            Command::Worker(worker) => Ok(worker.processing),
            other => panic!("{other:?}"),
        }
    };
    let defaults = processing(&[]).unwrap();
    assert_eq!(defaults.batch_wait(), Duration::from_millis(500));
    assert_eq!(defaults.lease_ttl(), Duration::from_secs(5));
    assert_eq!(defaults.retry_backoff(), Duration::from_millis(200));

    let new = processing(&[
        "--batch-wait",
        "20ms",
        "--lease-ttl",
        "2s",
        "--retry-backoff",
        "1s",
    ])
    .unwrap();
    assert_eq!(new.batch_wait(), Duration::from_millis(20));
    assert_eq!(new.lease_ttl(), Duration::from_secs(2));
    assert_eq!(new.retry_backoff(), Duration::from_secs(1));

    let old = processing(&[
        "--batch-wait-ms",
        "20",
        "--lease-ttl-ms",
        "2000",
        "--retry-backoff-ms",
        "1000",
    ])
    .unwrap();
    assert_eq!(old.batch_wait(), Duration::from_millis(20));
    assert_eq!(old.lease_ttl(), Duration::from_secs(2));
    assert_eq!(old.retry_backoff(), Duration::from_secs(1));

    for (args, says) in [
        (
            &["--lease-ttl", "100ms"][..],
            "must be between 300ms and 10m",
        ),
        (&["--batch-wait", "500"][..], "write it as 500ms"),
        (
            &["--batch-wait", "1s", "--batch-wait-ms", "5"][..],
            "cannot be used with",
        ),
    ] {
        let error = processing(args).unwrap_err();
        assert!(error.contains(says), "{args:?}: {error}");
    }
}

#[test]
fn listener_defaults_match_the_flags_and_zero_switches_off() {
    let Command::Serve(serve) = Cli::try_parse_from(["streamstock", "serve"])
        .unwrap()
        .command
    else {
        panic!("serve parses as serve")
    };
    assert_eq!(serve.gateway.connections, super::ListenerArgs::default());
    let Command::Worker(worker) = Cli::try_parse_from([
        "streamstock",
        "worker",
        "--header-read-timeout",
        "0s",
        "--idle-timeout",
        "0s",
        "--max-connections",
        "0",
        "--max-connections-per-address",
        "0",
    ])
    .unwrap()
    .command
    else {
        panic!("worker parses as worker")
    };
    let options = worker.connections.server_options("worker").unwrap();
    assert_eq!(options.timeouts.header_read, None);
    assert_eq!(options.timeouts.idle, None);
    assert_eq!(
        (options.max_connections, options.max_per_address),
        (None, None)
    );
    let defaults = super::ListenerArgs::default()
        .server_options("gateway")
        .unwrap();
    let total = defaults.max_connections.expect("a cap by default");
    assert!(
        defaults
            .max_per_address
            .expect("a per-address cap by default")
            < total
    );
    assert!(Cli::try_parse_from(["streamstock", "serve", "--idle-timeout", "soon"]).is_err());
    // A certificate needs its key, and the other way round.
    assert!(Cli::try_parse_from(["streamstock", "serve", "--tls-cert", "c.pem"]).is_err());
    assert!(Cli::try_parse_from(["streamstock", "serve", "--tls-key", "k.pem"]).is_err());
}
