//! The `dinggate` command line: parse arguments, load config, serve.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dinggate::config::{Config, LogConfig, LogFormat};
use dinggate::mock::{MockDingTalk, MockSettings, Org};
use dinggate::AppState;

#[derive(Parser)]
#[command(
    name = "dinggate",
    version,
    about = "Puts internal web apps behind DingTalk login"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Configuration file (YAML); DINGGATE_* env vars override it.
        #[arg(long, short, default_value = "gateway.yaml")]
        config: PathBuf,
    },
    /// Run mock DingTalk + demo upstream + gateway on loopback.
    Demo,
    /// Run the mock DingTalk server.
    MockDingtalk {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:4181")]
        listen: String,
        /// Organization YAML (default: the built-in demo org).
        #[arg(long)]
        org: Option<PathBuf>,
        /// App key the mock accepts.
        #[arg(long)]
        client_id: Option<String>,
        /// App secret the mock accepts.
        #[arg(long)]
        client_secret: Option<String>,
    },
    /// Run only the demo upstream (shows/echoes the headers it receives; for trials and benchmarks).
    DemoUpstream {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Validate the configuration and print it with secrets redacted.
    Check {
        /// Configuration file (YAML); DINGGATE_* env vars override it.
        #[arg(long, short, default_value = "gateway.yaml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dinggate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dinggate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { config } => match Config::load(&config) {
            Ok(cfg) => {
                // What `run` would refuse beyond the config itself (keys, the largest session).
                if let Err(e) = AppState::build(cfg.clone()) {
                    eprintln!("{}: {e}", config.display());
                    return Ok(ExitCode::FAILURE);
                }
                print!("{}", cfg.redacted_yaml());
                eprint!("\n{}", cfg.routes.describe());
                for w in &cfg.warnings {
                    eprintln!("warning: {w}");
                }
                eprintln!(
                    "{}: OK (register {} as the DingTalk redirect URL)",
                    config.display(),
                    cfg.callback_url()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{}: {e}", config.display());
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Run { config } => {
            let cfg = match Config::load(&config) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    return Ok(ExitCode::FAILURE);
                }
            };
            dinggate::telemetry::init(&cfg.log);
            for w in &cfg.warnings {
                tracing::warn!(key = %w.key, "{}", w.problem);
            }
            catch_reload_signal()?;
            let listener = dinggate::server::bind(cfg.listen, cfg.server.listen_backlog)
                .with_context(|| format!("cannot listen on {}", cfg.listen))?;
            tracing::info!(
                listen = %cfg.listen,
                public_url = %cfg.public_url,
                routes = cfg.routes.routes().len(),
                callback = %cfg.callback_url(),
                "dinggate started"
            );
            let state = Arc::new(AppState::build(cfg)?);
            dinggate::serve(listener, state, shutdown_signal()).await;
            tracing::info!("dinggate stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => {
            dinggate::telemetry::init(&default_log());
            catch_reload_signal()?;
            dinggate::demo::run().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DemoUpstream { listen } => {
            dinggate::telemetry::init(&default_log());
            catch_reload_signal()?;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            println!("demo upstream on http://{listen}");
            dinggate::server::serve_http(
                listener,
                dinggate::server::ServerLimits::default(),
                dinggate::demo::upstream_handler,
                shutdown_signal(),
            )
            .await;
            Ok(ExitCode::SUCCESS)
        }
        Command::MockDingtalk {
            listen,
            org,
            client_id,
            client_secret,
        } => {
            dinggate::telemetry::init(&default_log());
            catch_reload_signal()?;
            let mut settings = MockSettings::default();
            if let Some(path) = org {
                settings.org = Org::from_yaml_file(&path)
                    .with_context(|| format!("cannot load org {}", path.display()))?;
            }
            if let Some(id) = client_id {
                settings.client_id = id;
            }
            if let Some(secret) = client_secret {
                settings.client_secret = secret;
            }
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            println!(
                "mock DingTalk on http://{listen}\n  client_id:     {}\n  client_secret: {}\n  corp_id:       {}\nusers:\n{}",
                settings.client_id,
                settings.client_secret,
                settings.org.corp_id(),
                settings.org.describe_users()
            );
            let mock = MockDingTalk::new(settings);
            dinggate::mock::serve(listener, mock, shutdown_signal()).await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn default_log() -> LogConfig {
    LogConfig {
        level: "info".to_owned(),
        format: LogFormat::Text,
    }
}

/// Keeps SIGHUP (what `systemctl reload` and `kill -HUP` send) from killing the process, its
/// default action: until configuration reload exists, each one is logged at WARN and the
/// process keeps serving. Call after logging is set up and before serving.
fn catch_reload_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup =
            signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::warn!(
                    "SIGHUP received: configuration reload is not supported, nothing changed; restart dinggate to apply changes"
                );
            }
        });
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (what container runtimes and systemd send).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
