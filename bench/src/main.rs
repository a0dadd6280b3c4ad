//! `sluice-bench`: the performance budget of docs/design.md section 8, measured
//! on real `sluice` and `sluice-agent` processes (found beside this binary),
//! real SQLite, real QUIC with mutual TLS and the real built-in plugins.
//!
//! Every scenario prints a table of figure, measured value, budget and
//! verdict (`--output json`: one JSON document with the machine and the
//! command). `--smoke` runs each scenario tiny and fast, to check that it
//! still runs; its figures mean nothing. The figures worth publishing come
//! from a release build (`cargo build --release --workspace --bins`).
//!
//! Must not decide anything about Sluice itself: it drives the processes
//! through their public interfaces (the admin API, the fleet protocol, the
//! runtime's API) and reports what it measured.

mod api;
mod artifacts;
mod client;
// High availability (issue 18, ha).
mod failover;
mod fleet;
mod overhead;
mod pipelines;
mod plugin;
mod recovery;
mod report;
// Scale (issue 19, scale).
mod scale;
mod throughput;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use report::{Report, ScenarioReport};

#[derive(Parser)]
#[command(name = "sluice-bench", about = "Measures Sluice against its performance budget (docs/design.md section 8)")]
struct Cli {
    /// Every scenario tiny and fast: checks that it runs, measures nothing.
    #[arg(long, global = true)]
    smoke: bool,
    /// `table` (default) or `json` (one document with figures, machine and command).
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Scenario {
    /// Sequential noop actions on one agent: per-action overhead p50 and p99.
    Overhead {
        /// Noop actions, one after the other (in stages of at most 50). [default: 100; smoke 5]
        #[arg(long)]
        actions: Option<usize>,
        /// Measured executions, after one warm-up. [default: 3; smoke 1]
        #[arg(long)]
        executions: Option<usize>,
        /// Extra flags for the agent, such as `--agent-arg=--allocator --agent-arg=on-demand`.
        #[arg(long = "agent-arg", allow_hyphen_values = true)]
        agent_args: Vec<String>,
    },
    /// Many PARALLEL executions over several agents: noop actions per second.
    Throughput {
        /// [default: 4; smoke 2]
        #[arg(long)]
        agents: Option<usize>,
        /// Slots of each agent. [default: 4; smoke 2]
        #[arg(long)]
        slots: Option<u32>,
        /// Executions started at once. [default: 60; smoke 4]
        #[arg(long)]
        executions: Option<usize>,
        /// Noop actions per execution, side by side. [default: 50; smoke 5]
        #[arg(long)]
        actions: Option<usize>,
    },
    /// N idle agents over QUIC and mutual TLS: controller memory per agent, handshakes per second.
    Fleet {
        /// [default: 50000; smoke 20]
        #[arg(long)]
        agents: Option<usize>,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 64)]
        parallel: usize,
        /// Handshakes in flight at once in the reconnect storm after a controller restart (0: no storm).
        #[arg(long, default_value_t = 1000)]
        storm_parallel: usize,
    },
    /// One artifact up and down through the controller, beside raw quinn.
    Artifacts {
        /// [default: 256; smoke 4]
        #[arg(long)]
        size_mib: Option<usize>,
        /// Rounds; the median counts. [default: 3; smoke 1]
        #[arg(long)]
        repeat: Option<usize>,
    },
    /// Warm instantiate+call of noop with and without pooling; cold compile; cached load.
    Plugin {
        /// Measured calls per allocator. [default: 5000; smoke 50]
        #[arg(long)]
        iterations: Option<usize>,
    },
    /// Controller SIGKILLed with N executions in flight: time until it serves again, none lost.
    Recovery {
        /// Executions in flight (at most 1000). [default: 1000; smoke 10]
        #[arg(long)]
        executions: Option<usize>,
        /// Do not let an agent finish the executions after the restart.
        #[arg(long)]
        no_finish: bool,
    },
    // High availability (issue 18, ha).
    /// Three controllers on a throwaway PostgreSQL, the leader SIGKILLed mid-run: takeover, executions lost.
    Failover {
        /// Executions started before the kill. [default: 20; smoke 3]
        #[arg(long)]
        executions: Option<usize>,
        /// [default: 2; smoke 1]
        #[arg(long)]
        agents: Option<usize>,
        /// Seconds each action takes. [default: 3; smoke 1]
        #[arg(long)]
        action_seconds: Option<u32>,
    },
    // Scale (issue 19, scale).
    /// A controller on a store of many pipelines with a long past: start-up, listing latencies, overhead.
    Scale {
        /// [default: 10000; smoke 20]
        #[arg(long)]
        pipelines: Option<usize>,
        /// Ended executions in the store. [default: 1000000; smoke 2000]
        #[arg(long)]
        executions: Option<usize>,
        /// Of them, the history of one pipeline. [default: 100000; smoke 500]
        #[arg(long)]
        long: Option<usize>,
        /// Requests per latency figure. [default: 200; smoke 10]
        #[arg(long)]
        samples: Option<usize>,
        /// Noops per execution of the overhead measure. [default: 100; smoke 5]
        #[arg(long)]
        actions: Option<usize>,
        /// Measured executions of the overhead measure, on each store. [default: 3; smoke 1]
        #[arg(long)]
        runs: Option<usize>,
    },
    /// Every scenario with its default sizes (or smoke sizes with --smoke).
    All,
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let command: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(&cli)) {
        Ok(report) => {
            match cli.output {
                Output::Table => print!("{}", report.table()),
                Output::Json => println!("{:#}", report.json(&command)),
            }
            // Drop processes and connections before the runtime goes.
            drop(report);
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn run(cli: &Cli) -> Result<Report> {
    let smoke = cli.smoke;
    let pick = |given: Option<usize>, full: usize, small: usize| given.unwrap_or(if smoke { small } else { full });
    let scenarios: Vec<&Scenario> = match &cli.scenario {
        Scenario::All => Vec::new(),
        one => vec![one],
    };
    let defaults = [
        Scenario::Overhead { actions: None, executions: None, agent_args: Vec::new() },
        Scenario::Throughput { agents: None, slots: None, executions: None, actions: None },
        Scenario::Fleet { agents: None, parallel: 64, storm_parallel: 1000 },
        Scenario::Artifacts { size_mib: None, repeat: None },
        Scenario::Plugin { iterations: None },
        Scenario::Recovery { executions: None, no_finish: false },
        // Scale (issue 19, scale).
        Scenario::Scale { pipelines: None, executions: None, long: None, samples: None, actions: None, runs: None },
    ];
    let scenarios: Vec<&Scenario> = if scenarios.is_empty() { defaults.iter().collect() } else { scenarios };
    let mut report = Report { smoke, scenarios: Vec::new() };
    for scenario in scenarios {
        let one: ScenarioReport = match scenario {
            Scenario::Overhead { actions, executions, agent_args } => {
                overhead::run(&overhead::Params {
                    actions: pick(*actions, 100, 5),
                    executions: pick(*executions, 3, 1),
                    agent_args: agent_args.clone(),
                })
                .await?
            }
            Scenario::Throughput { agents, slots, executions, actions } => {
                throughput::run(&throughput::Params {
                    agents: pick(*agents, 4, 2),
                    slots: slots.unwrap_or(if smoke { 2 } else { 4 }),
                    executions: pick(*executions, 60, 4),
                    actions: pick(*actions, 50, 5),
                })
                .await?
            }
            Scenario::Fleet { agents, parallel, storm_parallel } => {
                let params = fleet::Params {
                    agents: pick(*agents, 50_000, 20),
                    parallel: *parallel,
                    storm_parallel: *storm_parallel,
                };
                fleet::run(&params).await?
            }
            Scenario::Artifacts { size_mib, repeat } => {
                artifacts::run(&artifacts::Params { size_mib: pick(*size_mib, 256, 4), repeat: pick(*repeat, 3, 1) }).await?
            }
            Scenario::Plugin { iterations } => {
                let params = plugin::Params { iterations: pick(*iterations, 5000, 50) };
                tokio::task::block_in_place(|| plugin::run(&params))?
            }
            Scenario::Recovery { executions, no_finish } => {
                recovery::run(&recovery::Params { executions: pick(*executions, 1000, 10), finish: !no_finish && !smoke })
                    .await?
            }
            // High availability (issue 18, ha).
            Scenario::Failover { executions, agents, action_seconds } => {
                let params = failover::Params {
                    executions: pick(*executions, 20, 3),
                    agents: pick(*agents, 2, 1),
                    action_seconds: pick(action_seconds.map(|s| s as usize), 3, 1) as u32,
                };
                failover::run(&params).await?
            }
            // Scale (issue 19, scale).
            Scenario::Scale { pipelines, executions, long, samples, actions, runs } => {
                scale::run(&scale::Params {
                    pipelines: pick(*pipelines, 10_000, 20),
                    executions: pick(*executions, 1_000_000, 2_000),
                    long: pick(*long, 100_000, 500),
                    samples: pick(*samples, 200, 10),
                    actions: pick(*actions, 100, 5),
                    runs: pick(*runs, 3, 1),
                })
                .await?
            }
            Scenario::All => unreachable!("expanded above"),
        };
        if cli.output == Output::Table {
            eprintln!("{}: done", one.scenario);
        }
        report.scenarios.push(one);
    }
    Ok(report)
}
