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
    let config = controller_config(api, args)?;
    // Flags > environment > file; a variable set for another purpose (the
    // CLI's SLUICE_API) must not override the file silently.
    if !check_config {
        for warning in settings.as_ref().map(|s| s.overrides()).unwrap_or_default() {
            tracing::warn!(%warning, "setting overridden");
        }
    }
    if check_config {
        // Written, not printed: a closed pipe (`| head`) is no panic.
        let mut text = settings.map(|s| s.to_toml(&sluice::cli::CONTROLLER)).unwrap_or_default();
        text.push_str("# the settings are valid\n");
        let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
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
    if args.data_dir.as_os_str().is_empty() {
        return Err(Failure::new(2, "--data-dir is empty"));
    }
    let notifications = sluice::cli::notify_config(&args);
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
    })
}
