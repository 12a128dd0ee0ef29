//! The running configuration, swapped whole on reload.
//!
//! Each configuration is one immutable [`Shared`] with a generation number.
//! A reload builds the next one (carrying over what must survive: request
//! counters, each kept backend's metrics and learned routing state) and
//! publishes it in [`Live`]. Workers notice the new generation number with
//! one relaxed load per event and switch: new requests use the new
//! configuration, while requests already in flight finish against the one
//! they started with, which the worker keeps ([`Generations`]) until its
//! last such request ends. Nothing is locked on the request path: the
//! mutex is taken once per worker per reload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use super::Shared;
use super::drained::Drained;
use super::learned::Learned;
use super::reload::{Plan, map_backends};
use crate::balance;
use crate::config::ProxyConfig;
use crate::health::active::{self, ActiveHealth};
use crate::health::{Ejector, RetryBudget};
use crate::metrics::Metrics;

/// Older generations a worker keeps at most; a reload storm beyond this
/// keeps the newest and lets the oldest requests' bookkeeping go to the
/// current generation instead (a reload a second over 16 s is far beyond
/// any operator's rate, and nothing is lost but the accuracy of one
/// generation's in-flight gauge).
const MAX_RETIRED: usize = 16;

/// The current configuration, as published to the workers.
#[derive(Debug)]
pub struct Live {
    generation: AtomicU64,
    current: Mutex<(Arc<Shared>, ProxyConfig)>,
    /// Reloads applied and refused (`tidegate_reloads_total{result}`).
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// When the last reload was applied.
    reloaded_at: Mutex<Option<SystemTime>>,
}

impl Live {
    pub fn new(shared: Arc<Shared>, cfg: ProxyConfig) -> Arc<Live> {
        Arc::new(Live {
            generation: AtomicU64::new(shared.generation),
            current: Mutex::new((shared, cfg)),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            reloaded_at: Mutex::new(None),
        })
    }

    /// The generation number workers should be on.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current configuration.
    pub fn current(&self) -> Arc<Shared> {
        match self.current.lock() {
            Ok(c) => Arc::clone(&c.0),
            Err(poisoned) => Arc::clone(&poisoned.into_inner().0),
        }
    }

    /// The configuration the current generation was built from.
    pub fn config(&self) -> ProxyConfig {
        match self.current.lock() {
            Ok(c) => c.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    /// Makes `next` the current configuration.
    pub fn publish(&self, next: Arc<Shared>, cfg: ProxyConfig) {
        let generation = next.generation;
        match self.current.lock() {
            Ok(mut c) => *c = (next, cfg),
            Err(poisoned) => *poisoned.into_inner() = (next, cfg),
        }
        self.generation.store(generation, Ordering::Release);
        self.reloads.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut at) = self.reloaded_at.lock() {
            *at = Some(SystemTime::now());
        }
    }

    /// When the last reload was applied, if any.
    pub fn reloaded_at(&self) -> Option<SystemTime> {
        self.reloaded_at.lock().ok().and_then(|at| *at)
    }
}

/// A worker's generations: the ones its requests in flight still use.
#[derive(Debug, Default)]
pub struct Generations {
    /// Attempts in flight on this worker in the current generation.
    inflight: usize,
    /// Older generations with their attempts still in flight here.
    retired: Vec<(Arc<Shared>, usize)>,
}

impl Generations {
    /// An attempt starts (always in the current generation).
    pub fn began(&mut self) {
        self.inflight += 1;
    }

    /// An attempt of generation `generation` ended; `current` is the
    /// worker's current generation number.
    pub fn ended(&mut self, generation: u64, current: u64) {
        if generation == current {
            self.inflight = self.inflight.saturating_sub(1);
            return;
        }
        if let Some(i) = self
            .retired
            .iter()
            .position(|(s, _)| s.generation == generation)
        {
            let done = self.retired.get_mut(i).is_some_and(|(_, n)| {
                *n = n.saturating_sub(1);
                *n == 0
            });
            if done {
                self.retired.swap_remove(i);
            }
        }
    }

    /// The worker moves on from `old`; keeps it while its attempts run.
    pub fn retire(&mut self, old: Arc<Shared>) {
        if self.inflight > 0 {
            if self.retired.len() >= MAX_RETIRED {
                self.retired.remove(0);
            }
            self.retired.push((old, self.inflight));
        }
        self.inflight = 0;
    }

    /// The retired generation `generation`, if this worker still has it.
    pub fn get(&self, generation: u64) -> Option<&Arc<Shared>> {
        self.retired
            .iter()
            .find(|(s, _)| s.generation == generation)
            .map(|(s, _)| s)
    }

    /// Retired generations still held (for tests and the summary).
    pub fn retired(&self) -> usize {
        self.retired.len()
    }
}

/// Why a configuration generation could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// The policy's parameters are invalid.
    Policy { name: &'static str, why: String },
    /// The health checker thread could not start.
    HealthChecker(std::io::Error),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Policy { name, why } => write!(f, "invalid --policy '{name}': {why}"),
            BuildError::HealthChecker(e) => write!(f, "cannot start the health checker: {e}"),
        }
    }
}

/// Builds a configuration generation from `cfg`. With `prev` (a reload),
/// what belongs to the process is shared with it (request counters, the
/// latency histogram, the retry budget, the request id prefix), and each
/// backend that stays keeps its metrics. Starts the active health checker
/// of the new generation if `cfg` asks for one (the previous generation's
/// checker stops when that generation is dropped).
pub fn build(cfg: &ProxyConfig, prev: Option<&Shared>, now: Instant) -> Result<Shared, BuildError> {
    let backends: Vec<balance::Backend> = cfg
        .backends
        .iter()
        .map(|b| balance::Backend {
            addr: b.addr,
            name: b.name.clone(),
            weight: b.weight,
            backup: b.backup,
        })
        .collect();
    let selector = match prev {
        Some(prev) => {
            let map = map_backends(&prev.backends, &cfg.backends);
            balance::rebuild(&cfg.policy, &backends, &*prev.selector, &map, now)
        }
        None => balance::build(&cfg.policy, &backends, now),
    }
    .map_err(|e| BuildError::Policy {
        name: cfg.policy.name(),
        why: e.to_string(),
    })?;
    let names = cfg.backends.iter().map(|b| b.name.clone());
    let backups = cfg.backends.iter().filter(|b| b.backup).count();
    let learns = cfg.policy.learns_limits();
    let learned = learns.then(|| {
        let old = prev.and_then(|p| p.learned.as_deref());
        Arc::new(Learned::new(&cfg.backends, cfg.server.workers, old, now))
    });
    let shared = match prev {
        None => Shared {
            generation: 0,
            backends: cfg.backends.clone(),
            backend_conn: cfg.backend_conn,
            timeouts: cfg.timeouts,
            selector,
            stats: Arc::default(),
            metrics: Metrics::new(names, cfg.slo),
            latencies: Arc::new(Mutex::new(super::summary::new_histogram())),
            slo: cfg.slo,
            ejector: Ejector::new(cfg.backends.len(), now, cfg.eject_5xx, cfg.eject_after)
                .with_backups(backups),
            retry_budget: Arc::new(RetryBudget::new(now)),
            active: None,
            forward: cfg.forward.clone(),
            forward_https: https(&cfg.forward),
            tls: listener_tls(cfg),
            id_prefix: super::id_prefix(),
            drained: Arc::new(Drained::new(cfg.backends.len())),
            slots: super::slots::Slots::build(&cfg.backends, None, learns),
            board: Arc::new(super::board::Board::new(cfg.server.workers)),
            queue: cfg.queue,
            learned,
        },
        Some(prev) => {
            let map = map_backends(&prev.backends, &cfg.backends);
            Shared {
                generation: prev.generation + 1,
                backends: cfg.backends.clone(),
                backend_conn: cfg.backend_conn,
                timeouts: cfg.timeouts,
                selector,
                stats: Arc::clone(&prev.stats),
                metrics: prev.metrics.carried(names, &map, cfg.slo),
                latencies: Arc::clone(&prev.latencies),
                slo: cfg.slo,
                ejector: Ejector::new(cfg.backends.len(), now, cfg.eject_5xx, cfg.eject_after)
                    .with_backups(backups),
                retry_budget: Arc::clone(&prev.retry_budget),
                active: None,
                forward: cfg.forward.clone(),
                forward_https: https(&cfg.forward),
                tls: listener_tls(cfg),
                id_prefix: prev.id_prefix,
                // A backend drained by an operator stays drained.
                drained: Arc::new(prev.drained.remapped(&map)),
                slots: super::slots::Slots::build(
                    &cfg.backends,
                    Some((&prev.slots, &prev.backends)),
                    learns,
                ),
                board: Arc::clone(&prev.board),
                queue: cfg.queue,
                learned,
            }
        }
    };
    let mut shared = shared;
    if let Some((path, interval)) = &cfg.health_check {
        let active = Arc::new(ActiveHealth::new(cfg.backends.len()));
        let targets = cfg
            .backends
            .iter()
            .map(|b| (b.addr, b.name.clone(), b.tls.clone()))
            .collect();
        active::spawn(&active, targets, path.clone(), *interval)
            .map_err(BuildError::HealthChecker)?;
        shared.active = Some(active);
    }
    Ok(shared)
}

impl Live {
    /// Applies `cfg` as the next generation. What cannot change without a
    /// restart (the listener, the worker count, the request log) is left as
    /// it was and named in the plan. Backends that stay keep their metrics
    /// and their learned routing state; removed ones take no new request
    /// and finish what is in flight. Errors leave the running configuration
    /// untouched and count as a failed reload.
    pub fn reload(&self, cfg: ProxyConfig) -> Result<Plan, String> {
        // The caller logs the outcome (SIGHUP and the API through
        // `runtime::reload::Reloader`); only what it cannot see is logged here.
        let result = self.apply(cfg);
        match &result {
            Ok(plan) => {
                log::debug!("configuration generation {} applied", self.generation());
                for what in &plan.needs_restart {
                    log::warn!("reload: {what} changed, which needs restart: left as it was");
                }
            }
            Err(_) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    fn apply(&self, cfg: ProxyConfig) -> Result<Plan, String> {
        cfg.timeouts.validate().map_err(|e| e.to_string())?;
        if cfg.backends.is_empty() {
            return Err("no backends".into());
        }
        let old_cfg = self.config();
        let plan = Plan::new(&old_cfg, &cfg);
        let mut applied = cfg;
        applied.server = old_cfg.server.clone();
        applied.access_log = old_cfg.access_log.clone();
        if !super::reload::same_listeners(&old_cfg.listeners, &applied.listeners) {
            applied.listeners = old_cfg.listeners.clone();
        }
        let prev = self.current();
        let now = Instant::now();
        let next = build(&applied, Some(&prev), now).map_err(|e| e.to_string())?;
        self.publish(Arc::new(next), applied);
        Ok(plan)
    }
}

/// `forward` for HTTPS clients.
fn https(forward: &crate::http::ForwardOpts) -> crate::http::ForwardOpts {
    crate::http::ForwardOpts {
        proto: crate::http::Proto::Https,
        ..forward.clone()
    }
}

/// Each listener's TLS configuration, by `Accepted::listener`.
fn listener_tls(cfg: &ProxyConfig) -> Vec<Option<Arc<rustls::ServerConfig>>> {
    std::iter::once(None)
        .chain(
            cfg.listeners
                .iter()
                .map(|l| l.tls.as_ref().map(|t| Arc::clone(&t.config))),
        )
        .collect()
}
