//! Configuration reload (SIGHUP): re-read and validate everything, keep what needs a restart as it runs, swap the new state in.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConfigError, ServerConfig};
use crate::state::{BuildError, Live};

/// Why a reload left the running configuration in service.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file, the environment or a secret file was refused (every problem is listed).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The configuration is valid but its state could not be built (keys, cookie size,
    /// upstream TLS files).
    #[error(transparent)]
    Build(#[from] BuildError),
}

impl ReloadError {
    /// One line per problem, for the log.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ReloadError::Config(e) if !e.issues().is_empty() => {
                e.issues().iter().map(ToString::to_string).collect()
            }
            ReloadError::Config(e) => e.to_string().lines().map(str::to_owned).collect(),
            ReloadError::Build(e) => vec![e.to_string()],
        }
    }
}

/// What a successful reload put in service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The hash of the configuration now in service (`dinggate_config_info`).
    pub hash: String,
    /// The hash of the one it replaced.
    pub previous_hash: String,
    /// Settings the new file changes that only a restart applies; they keep their running
    /// values (see [`RESTART_ONLY`]).
    pub needs_restart: Vec<&'static str>,
}

/// Settings a running gateway cannot change: the sockets and threads it serves with, the limits
/// its accept loops were started with, the log setup and the in-memory sign-out list's size.
pub const RESTART_ONLY: [&str; 17] = [
    "listen",
    "server.header_read_timeout",
    "server.max_header_bytes",
    "server.shutdown_timeout",
    "server.idle_timeout",
    "server.max_connections",
    "server.max_concurrent_streams",
    "server.listen_backlog",
    "server.workers",
    "admin.listen",
    "tls",
    "log.level",
    "log.format",
    "log.repeat_interval",
    "session.max_revocations",
    "reload.watch_interval",
    "store",
];

/// Loads the configuration with `load` (the same loading and validation as `dinggate run` and
/// `dinggate check`), builds its state from the running one, and puts it in service. Requests
/// already being served finish on the state they started with; open connections are kept.
///
/// On any problem nothing changes, and every problem is logged. Both outcomes are logged,
/// counted in `dinggate_config_reloads_total` and reported by the admin `/readyz`.
pub fn reload(
    live: &Live,
    load: impl FnOnce() -> Result<Config, ConfigError>,
) -> Result<Reloaded, ReloadError> {
    let running = live.load();
    let result = load().map_err(ReloadError::from).and_then(|mut config| {
        let needs_restart = keep_running_settings(&running.config, &mut config);
        let warnings = std::mem::take(&mut config.warnings);
        let next = running.rebuild(config)?;
        Ok((next, needs_restart, warnings))
    });
    running.metrics.reload(result.is_ok());
    match result {
        Ok((next, needs_restart, warnings)) => {
            let reloaded = Reloaded {
                hash: next.config.hash(),
                previous_hash: running.config.hash(),
                needs_restart,
            };
            running.metrics.config_loaded(&reloaded.hash);
            running.readiness.reloaded(None);
            live.store(Arc::new(next));
            for w in &warnings {
                tracing::warn!(key = %w.key, "{}", w.problem);
            }
            for key in &reloaded.needs_restart {
                tracing::warn!(
                    key,
                    "configuration reload: this setting changed, but only a restart applies it; it keeps its running value"
                );
            }
            tracing::info!(
                hash = %reloaded.hash,
                previous_hash = %reloaded.previous_hash,
                routes = live.load().config.routes.routes().len(),
                "configuration reloaded: new requests use it"
            );
            Ok(reloaded)
        }
        Err(err) => {
            let problems = err.problems();
            for problem in &problems {
                tracing::error!(problem = %problem, "configuration reload failed");
            }
            tracing::error!(
                problems = problems.len(),
                hash = %running.config.hash(),
                "configuration reload failed: the running configuration stays in service; fix the problems above and reload again"
            );
            running.readiness.reloaded(Some(problems.join("; ")));
            Err(err)
        }
    }
}

/// Re-reads the configuration with `load` every `interval` and reloads it when it differs from
/// the one in service (secrets included): for orchestrators that update mounted files (Kubernetes
/// ConfigMaps and Secrets) but send no signal.
///
/// A change is acted on only once two looks in a row found the same thing, so a file caught
/// half-written is never loaded: a truncated YAML file can still be valid (a route list cut
/// short, a `deny:` rule lost) and must not go into service. A file that changes only settings
/// a restart applies is not reloaded (those are named once at WARN); a broken file is logged and
/// counted once per distinct problem, not at every look. Runs until the task is dropped.
pub async fn watch<F>(live: Live, interval: Duration, load: F)
where
    F: Fn() -> Result<Config, ConfigError> + Send + Sync + 'static,
{
    let load = Arc::new(load);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    // What the previous look found (a fingerprint or a problem), and what was acted on last.
    let mut previous: Option<String> = None;
    let mut acted: Option<String> = None;
    let mut last_restart_only: Vec<&'static str> = Vec::new();
    loop {
        ticker.tick().await;
        // Reading and validating files is blocking work: off the thread that serves requests.
        let (look_live, look_load) = (live.clone(), load.clone());
        let Ok(look) = tokio::task::spawn_blocking(move || look_at(&look_live, &*look_load)).await
        else {
            continue;
        };
        let seen = look.key();
        let stable = previous.as_ref() == Some(&seen);
        previous = Some(seen.clone());
        match look {
            Look::Unchanged { restart_only } => {
                if acted.take().is_some() {
                    // The file is back to what is in service: nothing failed any more.
                    live.load().readiness.reloaded(None);
                }
                if restart_only != last_restart_only {
                    for key in &restart_only {
                        tracing::warn!(
                            key,
                            "configuration file changed: this setting needs a restart to apply; it keeps its running value"
                        );
                    }
                    last_restart_only = restart_only;
                }
            }
            // A configuration that loads but cannot be built, or does not load, fails the same
            // way at each look: one try per distinct configuration or problem.
            _ if !stable || acted.as_ref() == Some(&seen) => {}
            Look::Changed(config, restart_only) => {
                last_restart_only = restart_only;
                let reload_live = live.clone();
                let reloaded = tokio::task::spawn_blocking(move || {
                    reload(&reload_live, || Ok(*config)).is_ok()
                })
                .await;
                acted = match reloaded {
                    Ok(true) => None,
                    _ => Some(seen),
                };
            }
            Look::Broken(err) => {
                acted = Some(seen);
                let _ = reload(&live, || Err(err));
            }
        }
    }
}

/// What one look at the configuration found.
enum Look {
    /// The same as in service, apart from these restart-only settings.
    Unchanged { restart_only: Vec<&'static str> },
    /// A different configuration (and the restart-only settings it changes).
    Changed(Box<Config>, Vec<&'static str>),
    /// A configuration that does not load.
    Broken(ConfigError),
}

impl Look {
    /// What was found, to compare looks: the configuration's fingerprint, or the problem.
    fn key(&self) -> String {
        match self {
            Look::Unchanged { .. } => "unchanged".to_owned(),
            Look::Changed(config, _) => format!("{:x?}", config.fingerprint()),
            Look::Broken(err) => err.to_string(),
        }
    }
}

fn look_at(live: &Live, load: &dyn Fn() -> Result<Config, ConfigError>) -> Look {
    let running = live.load();
    match load() {
        Err(err) => Look::Broken(err),
        Ok(config) => {
            let mut pinned = config.clone();
            let restart_only = keep_running_settings(&running.config, &mut pinned);
            if pinned.fingerprint() == running.config.fingerprint() {
                Look::Unchanged { restart_only }
            } else {
                Look::Changed(Box::new(config), restart_only)
            }
        }
    }
}

/// Sets the [`RESTART_ONLY`] settings of `next` to their running values and names those the
/// new file changed. `server.shutdown_delay` is read at shutdown, so it does follow a reload.
fn keep_running_settings(running: &Config, next: &mut Config) -> Vec<&'static str> {
    let before = serde_json::to_value(running).unwrap_or_default();
    let after = serde_json::to_value(&*next).unwrap_or_default();
    let at = |v: &serde_json::Value, key: &str| {
        v.pointer(&format!("/{}", key.replace('.', "/"))).cloned()
    };
    let changed = RESTART_ONLY
        .into_iter()
        .filter(|key| at(&before, key) != at(&after, key))
        .collect();
    next.listen = running.listen;
    next.server = ServerConfig {
        shutdown_delay: next.server.shutdown_delay,
        ..running.server.clone()
    };
    next.admin = running.admin.clone();
    next.tls = running.tls.clone();
    next.log.level = running.log.level.clone();
    next.log.format = running.log.format;
    next.log.repeat_interval = running.log.repeat_interval;
    next.session.max_revocations = running.session.max_revocations;
    next.reload = running.reload.clone();
    next.store = running.store.clone();
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
listen: 127.0.0.1:4180
public_url: http://127.0.0.1:4180
upstream: http://127.0.0.1:9
dingtalk: { client_id: x, client_secret: y, corp_id: dingcorp }
session: { signing_key: "0123456789abcdef0123456789abcdef" }
"#;

    fn config(extra: &str) -> Config {
        Config::from_yaml_str(&format!("{BASE}{extra}")).unwrap()
    }

    #[test]
    fn every_restart_only_key_exists_in_the_serialized_config() {
        let value = serde_json::to_value(config("")).unwrap();
        for key in RESTART_ONLY {
            // `tls` and `store` are absent without them; the others always have a value.
            if key == "tls" || key == "store" {
                continue;
            }
            let pointer = format!("/{}", key.replace('.', "/"));
            assert!(value.pointer(&pointer).is_some(), "{key} not in {value}");
        }
    }

    #[test]
    fn restart_only_settings_keep_their_running_values_and_are_named() {
        let running = config("");
        let mut next = config(
            "server: { workers: 3, max_connections: 10, shutdown_delay: 4s }\nlog: { level: debug, access: false }\nadmin: { listen: 127.0.0.1:9090 }\nlisten: 127.0.0.1:4181\n",
        );
        let changed = keep_running_settings(&running, &mut next);
        assert_eq!(
            changed,
            vec![
                "listen",
                "server.max_connections",
                "server.workers",
                "admin.listen",
                "log.level"
            ]
        );
        assert_eq!(next.listen, running.listen);
        assert_eq!(next.server.workers, running.server.workers);
        assert_eq!(next.server.max_connections, running.server.max_connections);
        assert_eq!(next.admin.listen, None);
        assert_eq!(next.log.level, running.log.level);
        // Reloadable settings keep the new values.
        assert_eq!(
            next.server.shutdown_delay,
            std::time::Duration::from_secs(4)
        );
        assert!(!next.log.access);
    }

    #[test]
    fn an_unchanged_file_needs_no_restart() {
        let running = config("");
        let mut next = config("");
        assert!(keep_running_settings(&running, &mut next).is_empty());
    }
}
