//! `sluice`: the controller daemon, the demo and the admin CLI.

use sluice::cli::{Cmd, Failure};
use sluice::driver::{ControllerConfig, start};
use sluice::exit::{Exit, shutdown_signal};
use sluice::store::Durability;

fn main() {
    // `sluice action run` re-executes this binary as the launcher of
    // confined programs: that must happen before anything else.
    sluice_runtime::sandbox::run_launcher_if_asked();
    let (cli, settings) = match sluice::cli::parse_command_line(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(sluice_config::Error::Flags(e)) => e.exit(),
        Err(e) => Exit::Failed { code: 2, message: e.to_string() }.now(),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The CLI reports a refused certificate itself (with what to do), so
    // the verifier's own log line would only repeat it.
    let filter = std::env::var("SLUICE_LOG").unwrap_or_else(|_| {
        if matches!(cli.command, Cmd::Controller(_)) { "info" } else { "warn,rustls_platform_verifier=off" }.to_string()
    });
    let format = match &cli.command {
        Cmd::Controller(args) => args.log_format,
        _ => sluice::logging::LogFormat::Text,
    };
    sluice::logging::init(format, tracing_subscriber::EnvFilter::new(filter));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => Exit::Failed { code: 1, message: format!("cannot start the async runtime: {e}") }.now(),
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Cmd::Controller(args) => run_controller(cli.api.as_deref(), args, settings).await,
            Cmd::Demo(args) => sluice::demo::run(args).await,
            _ => sluice::cli::run(cli).await,
        }
    });
    match result {
        Ok(code) => Exit::Finished(code).now(),
        // A JSON log is all JSON (issue 17, obs): the reason goes to it as
        // an error event, not as an `error: ...` line beside it.
        Err(Failure { code, message }) if format == sluice::logging::LogFormat::Json => {
            tracing::error!("{message}");
            Exit::Finished(code).now()
        }
        Err(Failure { code, message }) => Exit::Failed { code, message }.now(),
    }
}

async fn run_controller(
    api: Option<&str>,
    args: sluice::cli::ControllerArgs,
    settings: Option<sluice_config::Settings>,
) -> Result<i32, Failure> {
    use sluice::https::{CertSource, Scheme};
    let check_config = args.check_config;
    let log_format = args.log_format;
    // Artifacts in S3 (issue 18, s3): a secret in the file only from a private file.
    if let Some(settings) = &settings {
        check_secret_file(settings)?;
    }
    let config = controller_config(api, args)?;
    // Flags > environment > file; a variable set for another purpose (the
    // CLI's SLUICE_API) must not override the file silently.
    if !check_config {
        for warning in settings.as_ref().map(|s| s.overrides()).unwrap_or_default() {
            tracing::warn!(%warning, "setting overridden");
        }
    }
    if check_config {
        // Artifacts in S3 (issue 18, s3): the bucket answers to these credentials.
        if let Some(s3) = &config.artifacts_s3 {
            let cache = std::env::temp_dir().join("sluice-check-config");
            let checked = match sluice::blobs::BlobStore::open_s3(&cache, s3.clone(), "artifacts") {
                Ok(store) => store.check().await,
                Err(e) => Err(e),
            };
            let _ = std::fs::remove_dir_all(&cache);
            checked.map_err(|e| Failure::new(2, format!("--artifacts: {e:#}")))?;
        }
        // Written, not printed: a closed pipe (`| head`) is no panic.
        let mut text = settings.map(|s| s.to_toml(&sluice::cli::CONTROLLER)).unwrap_or_default();
        text.push_str("# the settings are valid\n");
        let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
        return Ok(0);
    }
    // High availability (issue 18, ha): on PostgreSQL every controller is
    // one of a cluster: a standby until it takes the lease (docs/ha.md).
    if let sluice::store::Location::Postgres(url) = &config.store {
        let url = url.clone();
        sluice::ha::run(config, &url).await?;
        return Ok(0);
    }
    let (api_scheme, webhook_scheme) = (config.api_scheme, config.webhook_listen.map(|(_, scheme)| scheme));
    let controller = start(config.clone()).await?;
    // The banner is for a person at a terminal. With `--log-format json`
    // stdout usually lands in the same journal as the log, so it is left
    // out: the "controller started" log line carries the same addresses.
    if log_format == sluice::logging::LogFormat::Json {
        shutdown_signal().await;
        controller.close();
        return Ok(0);
    }
    println!("sluice controller");
    println!("  api:      {}", controller.api_url);
    if let Some(webhooks) = controller.webhooks {
        println!("  webhooks: {}://{webhooks}", webhook_scheme.unwrap_or(Scheme::Https).as_str());
    }
    println!("  fleet:    {}", controller.fleet);
    if api_scheme == Scheme::Https && matches!(config.api_cert, CertSource::Ca { .. }) {
        println!("  ca:       {}", controller.ca_file.display());
    }
    println!("  data dir: {}", config.data_dir.display());
    println!("  token:    {}", config.data_dir.join("admin.token").display());
    shutdown_signal().await;
    controller.close();
    Ok(0)
}

/// The controller's configuration from its settings, validated without
/// binding anything or touching the data dir (what `--check-config` runs).
fn controller_config(api: Option<&str>, args: sluice::cli::ControllerArgs) -> Result<ControllerConfig, Failure> {
    use sluice::https::{CertSource, Scheme, check_listener};
    let api = sluice::cli::api_bind_address(api)?;
    let api_scheme = if args.api_plain_http { Scheme::Http } else { Scheme::Https };
    check_listener(api, api_scheme, "--api-plain-http").map_err(|e| Failure::new(2, e))?;
    let webhook_scheme = if args.webhook_plain_http { Scheme::Http } else { Scheme::Https };
    if let Some(addr) = args.webhook_listen {
        check_listener(addr, webhook_scheme, "--webhook-plain-http").map_err(|e| Failure::new(2, e))?;
    }
    sluice::https::check_api_names(&args.api_names).map_err(|e| Failure::new(2, e))?;
    for (flag, file) in
        [("--api-cert", &args.api_cert), ("--api-key", &args.api_key), ("--notification-ca", &args.notification_ca)]
    {
        if let Some(file) = file
            && let Err(e) = std::fs::metadata(file)
        {
            return Err(Failure::new(2, format!("{flag} {}: {e}", file.display())));
        }
    }
    // High availability (issue 18, ha).
    if let Some(url) = &args.advertise_api
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(Failure::new(2, format!("--advertise-api {url}: give the URL, https://HOST:PORT")));
    }
    if let Some(addr) = &args.advertise_fleet
        && addr.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(Failure::new(2, format!("--advertise-fleet {addr}: give HOST:PORT")));
    }
    if args.data_dir.as_os_str().is_empty() {
        return Err(Failure::new(2, "--data-dir is empty"));
    }
    let notifications = sluice::cli::notify_config(&args);
    let artifacts_s3 = s3_config(&args)?;
    // Data lifecycle (issue 17, life).
    let retention = sluice::retention::Retention::parse(&args.keep_executions, &args.keep_days)
        .map_err(|problems| Failure::new(2, problems.join("\n")))?;
    // PostgreSQL (issue 18, pg): the error names the URL without its password.
    let store = match args.store.as_deref() {
        Some(store) => store.parse::<sluice::store::Location>().map_err(|e| Failure::new(2, format!("--store: {e}")))?,
        None => sluice::store::Location::Sqlite,
    };
    let api_cert = match (args.api_cert, args.api_key) {
        (Some(cert), Some(key)) => CertSource::Files { cert, key },
        _ => CertSource::Ca { names: args.api_names },
    };
    Ok(ControllerConfig {
        data_dir: args.data_dir,
        api,
        fleet: args.fleet,
        durability: if args.fsync { Durability::PowerLoss } else { Durability::Process },
        agent_cert_lifetime: args.agent_cert_lifetime,
        lease_timeout: args.lease_timeout,
        max_lost_retries: args.max_lost_retries,
        max_action_log: args.max_action_log,
        artifact_gc_interval: args.artifact_gc_interval,
        require_signed_plugins: args.require_signed_plugins,
        max_agent_slots: args.max_agent_slots,
        agent_upload_quota: args.agent_upload_quota,
        min_free_space: args.min_free_space,
        worker_job_timeout: args.worker_job_timeout,
        api_scheme,
        api_cert,
        webhook_listen: args.webhook_listen.map(|addr| (addr, webhook_scheme)),
        notifications,
        audit_retention: std::time::Duration::from_secs(args.audit_retention_days.saturating_mul(86_400)),
        retention,
        metrics_listen: args.metrics_listen,
        store,
        // High availability (issue 18, ha).
        leadership: None,
        advertise_api: args.advertise_api,
        advertise_fleet: args.advertise_fleet,
        artifacts_s3,
    })
}

/// `--artifacts s3://...` and the settings of the bucket (issue 18, s3):
/// each from its flag (or SLUICE_* variable, or the config file), else the
/// standard AWS variable.
fn s3_config(args: &sluice::cli::ControllerArgs) -> Result<Option<sluice::blobs::s3::S3Config>, Failure> {
    let Some(url) = &args.artifacts else { return Ok(None) };
    let (bucket, prefix) =
        sluice::blobs::s3::S3Config::parse_url(url).map_err(|e| Failure::new(2, format!("--artifacts: {e:#}")))?;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let endpoint = args.s3_endpoint.clone().or_else(|| env("AWS_ENDPOINT_URL_S3")).or_else(|| env("AWS_ENDPOINT_URL"));
    if let Some(endpoint) = &endpoint
        && !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
    {
        return Err(Failure::new(2, format!("--s3-endpoint {endpoint:?} must be an http:// or https:// URL")));
    }
    let access_key_id = args.s3_access_key_id.clone().or_else(|| env("AWS_ACCESS_KEY_ID"));
    let secret_access_key = args.s3_secret_access_key.clone().or_else(|| env("AWS_SECRET_ACCESS_KEY"));
    let (Some(access_key_id), Some(secret_access_key)) = (access_key_id, secret_access_key) else {
        return Err(Failure::new(
            2,
            "--artifacts s3://... needs credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or \
             --s3-access-key-id and --s3-secret-access-key)",
        ));
    };
    Ok(Some(sluice::blobs::s3::S3Config {
        bucket,
        prefix,
        endpoint,
        region: args
            .s3_region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into()),
        path_style: args.s3_path_style,
        access_key_id,
        secret_access_key,
        session_token: args.s3_session_token.clone().or_else(|| env("AWS_SESSION_TOKEN")),
    }))
}

/// A secret setting read from the config file (the S3 secret key, a
/// session token) is refused unless the file is its owner's alone, as the
/// data dir's key files are.
fn check_secret_file(settings: &sluice_config::Settings) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(file) = &settings.file else { return Ok(()) };
    let secrets = ["s3-secret-access-key", "s3-session-token"];
    let from_file: Vec<&str> = settings
        .effective
        .iter()
        .filter(|s| matches!(s.source, sluice_config::Source::File) && secrets.contains(&s.key.as_str()))
        .map(|s| s.key.as_str())
        .collect();
    if from_file.is_empty() {
        return Ok(());
    }
    let mode = std::fs::metadata(file).map(|m| m.permissions().mode()).unwrap_or(0o777);
    if mode & 0o077 != 0 {
        return Err(Failure::new(
            2,
            format!(
                "{} holds {} but is readable by others (mode {:o}): chmod 600 it, or pass the secret in \
                 AWS_SECRET_ACCESS_KEY",
                file.display(),
                from_file.join(", "),
                mode & 0o777
            ),
        ));
    }
    Ok(())
}
