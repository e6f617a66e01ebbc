//! The `dinggate` command line: parse arguments, load config, serve.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dinggate::config::{Config, LogConfig, LogFormat};
use dinggate::mock::{MockDingTalk, MockSettings, Org};
use dinggate::{AppState, Live, Worker};

/// `dinggate --version`: the release and the git commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BUILD_GIT_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "dinggate",
    version = VERSION,
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
    /// Check a configuration online, before anyone logs in: credentials, IP allow-list,
    /// permissions, corp_id, the redirect URL to register, public_url and the clock.
    /// Exit 0 when everything needed is in place.
    Doctor {
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
        /// Host registered as the app's login-free address (端内免登地址); repeatable. In-client
        /// code requests from pages on other hosts fail with errorCode 3. None: any page.
        #[arg(long = "homepage-domain")]
        homepage_domains: Vec<String>,
        /// Redirect URL registered for the app (安全设置 → 重定向URL); repeatable. Authorize
        /// requests with another redirect_uri get an error page. None: any (or the org YAML's
        /// `app.redirect_urls`).
        #[arg(long = "redirect-url")]
        redirect_urls: Vec<String>,
    },
    /// Run only the demo upstream (shows/echoes the headers it receives; for trials and benchmarks).
    DemoUpstream {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// List or end a person's sessions on every replica, through the shared store (store.url).
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
    },
    /// Validate the configuration and print it with secrets redacted.
    Check {
        /// Configuration file (YAML); DINGGATE_* env vars override it.
        #[arg(long, short, default_value = "gateway.yaml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum SessionsAction {
    /// Print the person's active sessions (id, signed in, last seen, address, device).
    List {
        /// The person: an enterprise userid (as recorded at login) or a unionId.
        #[arg(long)]
        user: String,
        /// Configuration file (YAML); DINGGATE_* env vars override it.
        #[arg(long, short, default_value = "gateway.yaml")]
        config: PathBuf,
    },
    /// End every session of the person signed in up to now, on every replica.
    Revoke {
        /// The person: an enterprise userid (as recorded at login) or a unionId.
        #[arg(long)]
        user: String,
        /// Configuration file (YAML); DINGGATE_* env vars override it.
        #[arg(long, short, default_value = "gateway.yaml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // The gateway builds its own runtimes: one per worker thread.
        Command::Run { config } => run_gateway(&config),
        Command::Check { config } => block_on(check(&config)),
        Command::Sessions { action } => block_on(sessions(action)),
        Command::Doctor { config } => block_on(doctor(&config)),
        Command::Demo => block_on(demo()),
        Command::DemoUpstream { listen } => block_on(demo_upstream(listen)),
        Command::MockDingtalk {
            listen,
            org,
            client_id,
            client_secret,
            homepage_domains,
            redirect_urls,
        } => block_on(mock_dingtalk(
            listen,
            org,
            client_id,
            client_secret,
            MockApp {
                homepage_domains,
                redirect_urls,
            },
        )),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dinggate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `dinggate run`: `server.workers` threads, each with a single-threaded Tokio runtime and its
/// own listening socket (`SO_REUSEPORT`: the kernel spreads connections over them), sharing one
/// `AppState`. The first worker runs on the main thread and also handles signals.
///
/// Why not one multi-threaded runtime: pinned to one CPU (the peer benchmark), the
/// work-stealing scheduler cost ~50 % more CPU per proxied request than a single-threaded one
/// (bench/compare.sh: 53 vs 35 µs), mostly in the kernel; a connection never needs another
/// thread, so nothing is lost by keeping each on the thread that accepted it (nginx and
/// Pingora's no-steal runtime do the same).
fn run_gateway(path: &Path) -> anyhow::Result<ExitCode> {
    let cfg = match Config::load(path) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    dinggate::telemetry::init(&cfg.log);
    for w in &cfg.warnings {
        tracing::warn!(key = %w.key, "{}", w.problem);
    }
    let workers = cfg.server.workers.max(1);
    // Every socket is bound before anything serves, so a busy port fails the start.
    let listeners = dinggate::server::bind_workers(cfg.listen, cfg.server.listen_backlog, workers)
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let admin_listener = cfg
        .admin
        .listen
        .map(|addr| {
            dinggate::server::bind_std(addr, 128, false)
                .with_context(|| format!("cannot listen on {addr} (admin.listen)"))
        })
        .transpose()?;
    let redirect_listener = cfg
        .tls
        .as_ref()
        .and_then(|t| t.redirect_http)
        .map(|addr| {
            dinggate::server::bind_std(addr, cfg.server.listen_backlog, false)
                .with_context(|| format!("cannot listen on {addr} (tls.redirect_http)"))
        })
        .transpose()?;
    tracing::info!(
        listen = %cfg.listen,
        public_url = %cfg.public_url,
        routes = cfg.routes.routes().len(),
        callback = %cfg.callback_url(),
        admin = cfg.admin.listen.map(tracing::field::display),
        tls = cfg.tls.is_some(),
        redirect_http = cfg.tls.as_ref().and_then(|t| t.redirect_http).map(tracing::field::display),
        workers,
        version = VERSION,
        "dinggate started"
    );
    let live = Live::new(Arc::new(AppState::build(cfg)?));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // The admin listener outlives the workers' drain, so probes see the 503 until the end.
    let (admin_stop, admin_stopped) = tokio::sync::watch::channel(false);
    let admin_thread = admin_listener
        .map(|listener| spawn_admin(listener, live.clone(), admin_stopped))
        .transpose()?;
    let mut listeners = listeners.into_iter().enumerate();
    let (_, first) = listeners.next().context("no listening socket")?;
    let mut threads = Vec::with_capacity(workers - 1);
    for (index, listener) in listeners {
        let live = live.clone();
        let mut stopped = stopped.clone();
        let worker = Worker { index, of: workers };
        let thread = std::thread::Builder::new()
            .name(format!("dinggate-w{index}"))
            .spawn(move || -> anyhow::Result<()> {
                single_threaded()?.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    let shutdown = async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    };
                    dinggate::serve_worker(listener, live, worker, shutdown).await;
                    Ok(())
                })
            })
            .context("cannot start a worker thread")?;
        threads.push(thread);
    }
    let served = single_threaded()?.block_on(async {
        catch_reload_signal(Some(Reload {
            live: live.clone(),
            path: path.to_owned(),
        }))?;
        if let Some(tls) = live.load().tls.clone() {
            tokio::spawn(tls.watch());
        }
        let watch_interval = live.load().config.reload.watch_interval;
        if !watch_interval.is_zero() {
            let path = path.to_owned();
            tokio::spawn(dinggate::reload::watch(
                live.clone(),
                watch_interval,
                move || Config::load(&path),
            ));
        }
        if let Some(listener) = redirect_listener {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let live = live.clone();
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                dinggate::tls_server::serve_redirect(listener, live, shutdown).await;
            });
        }
        let listener = tokio::net::TcpListener::from_std(first)?;
        let draining = live.clone();
        let stop = &stop;
        let shutdown = async move {
            shutdown_signal().await;
            // Readiness first, so load balancers stop sending; accepting stops after the delay.
            let state = draining.load();
            state.readiness.draining();
            let delay = state.config.server.shutdown_delay;
            drop(state);
            if !delay.is_zero() {
                tracing::info!(
                    delay_ms = delay.as_millis() as u64,
                    "readiness is 503; still accepting for server.shutdown_delay"
                );
                tokio::time::sleep(delay).await;
            }
            let _ = stop.send(true);
        };
        let worker = Worker {
            index: 0,
            of: workers,
        };
        dinggate::serve_worker(listener, live, worker, shutdown).await;
        anyhow::Ok(())
    });
    // Dropping the sender also stops the other workers if the first one failed to start.
    drop(stop);
    let mut failed = served.is_err();
    if let Err(e) = &served {
        tracing::error!(error = %e, "worker 0 failed");
    }
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "a worker failed");
                failed = true;
            }
            Err(_) => {
                tracing::error!("a worker panicked");
                failed = true;
            }
        }
    }
    let _ = admin_stop.send(true);
    if let Some(thread) = admin_thread {
        if !matches!(thread.join(), Ok(Ok(()))) {
            tracing::error!("the admin listener failed");
            failed = true;
        }
    }
    tracing::info!("dinggate stopped");
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The admin listener on a thread of its own, so that probes and scrapes are answered even when
/// the workers are saturated (a liveness probe timing out under load would restart the pod).
fn spawn_admin(
    listener: std::net::TcpListener,
    live: Live,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    std::thread::Builder::new()
        .name("dinggate-admin".to_owned())
        .spawn(move || -> anyhow::Result<()> {
            single_threaded()?.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let shutdown = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                dinggate::admin::serve(listener, live, shutdown).await;
                Ok(())
            })
        })
        .context("cannot start the admin thread")
}

/// Runs a command on a multi-threaded Tokio runtime.
fn block_on(
    command: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(command)
}

/// A single-threaded Tokio runtime with I/O and timers.
fn single_threaded() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `dinggate check`: validate the configuration and print it with secrets redacted.
/// `dinggate sessions list|revoke --user …`: works on the store the replicas share.
async fn sessions(action: SessionsAction) -> anyhow::Result<ExitCode> {
    let (config, user, revoke) = match &action {
        SessionsAction::List { config, user } => (config, user, false),
        SessionsAction::Revoke { config, user } => (config, user, true),
    };
    let cfg = Config::load(config).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let out = if revoke {
        dinggate::sessions::admin_revoke(&cfg, user).await?
    } else {
        dinggate::sessions::admin_list(&cfg, user).await?
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

async fn check(config: &Path) -> anyhow::Result<ExitCode> {
    match Config::load(config) {
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
    }
}

/// `dinggate doctor`: the online preflight; one line per check, exit 0 when nothing failed.
async fn doctor(config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = match Config::load(config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{}: {e}", config.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let report = dinggate::doctor::run(&cfg).await;
    print!("{}", report.render());
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `dinggate demo`: mock DingTalk + demo upstream + gateway on loopback.
async fn demo() -> anyhow::Result<ExitCode> {
    dinggate::telemetry::init(&default_log());
    catch_reload_signal(None)?;
    dinggate::demo::run().await?;
    Ok(ExitCode::SUCCESS)
}

/// `dinggate demo-upstream`: the demo upstream alone.
async fn demo_upstream(listen: String) -> anyhow::Result<ExitCode> {
    dinggate::telemetry::init(&default_log());
    catch_reload_signal(None)?;
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

/// The mock's app registrations given on the command line.
struct MockApp {
    homepage_domains: Vec<String>,
    redirect_urls: Vec<String>,
}

/// `dinggate mock-dingtalk`: the mock DingTalk alone.
async fn mock_dingtalk(
    listen: String,
    org: Option<PathBuf>,
    client_id: Option<String>,
    client_secret: Option<String>,
    app: MockApp,
) -> anyhow::Result<ExitCode> {
    dinggate::telemetry::init(&default_log());
    catch_reload_signal(None)?;
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
    settings.homepage_domains = app.homepage_domains;
    settings.redirect_urls = app.redirect_urls;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let mock = MockDingTalk::new(settings);
    let settings = mock.settings();
    let any = |list: &[String]| match list {
        [] => "(any)".to_owned(),
        _ => list.join(", "),
    };
    println!(
        "mock DingTalk on http://{listen}\n  client_id:     {}\n  client_secret: {}\n  corp_id:       {}\n  redirect URLs: {}\n  login-free hosts: {}\nusers:\n{}",
        settings.client_id,
        settings.client_secret,
        settings.org.corp_id(),
        any(&settings.redirect_urls),
        any(&settings.homepage_domains),
        settings.org.describe_users()
    );
    dinggate::mock::serve(listener, mock, shutdown_signal()).await;
    Ok(ExitCode::SUCCESS)
}

fn default_log() -> LogConfig {
    LogConfig {
        level: "info".to_owned(),
        format: LogFormat::Text,
        access: true,
        repeat_interval: dinggate::config::DEFAULT_REPEAT_INTERVAL,
    }
}

/// What SIGHUP reloads in `dinggate run`: the configuration file (with the environment and
/// secret files) into `live`.
struct Reload {
    live: Live,
    path: PathBuf,
}

/// Keeps SIGHUP (what `systemctl reload` and `kill -HUP` send) from killing the process, its
/// default action. With `reload` (the gateway), each one re-reads the TLS certificate (when the
/// gateway terminates TLS) and then the configuration; other commands log it at WARN and keep
/// serving. Call after logging is set up and before serving.
fn catch_reload_signal(reload: Option<Reload>) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup =
            signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let Some(Reload { live, path }) = &reload else {
                    tracing::warn!(
                        "SIGHUP received: this command has no configuration to reload, nothing changed"
                    );
                    continue;
                };
                tracing::info!(config = %path.display(), "SIGHUP received: reloading");
                if let Some(tls) = &live.load().tls {
                    tls.reload_logged("SIGHUP");
                }
                // Off the worker's thread: reading files and building clients must not stall
                // the requests this thread serves. The outcome is logged by `reload`.
                let (live, path) = (live.clone(), path.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    dinggate::reload::reload(&live, || Config::load(&path))
                })
                .await;
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
