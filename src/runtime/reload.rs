//! The one code path of a configuration reload, shared by SIGHUP (the
//! acceptor) and `POST /api/reload` (the admin thread).
//!
//! The reload itself is a hook installed by whoever knows the
//! configuration (`--config`); until one is installed, a reload is
//! reported as not supported and the process keeps running unchanged.
//! Reloads never overlap: the hook runs under a lock, so a SIGHUP that
//! arrives during an API reload waits for it.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use log::{info, warn};

/// Re-reads and applies the configuration: `Ok` with a one-line summary
/// of what changed, `Err` with why nothing did (the old configuration
/// stays in force).
pub type ReloadFn = dyn Fn() -> Result<String, String> + Send + Sync;

/// What a reload request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// Applied; the summary of what changed.
    Done(String),
    /// Refused; the old configuration stays. The errors, one line.
    Failed(String),
    /// No reload hook is installed (no `--config`).
    Unsupported,
}

/// Why a reload is not supported (logged and returned by the admin API).
pub const UNSUPPORTED: &str = "configuration reload is not supported (there is no --config)";

/// A handle on the reload hook; clones share it.
#[derive(Clone, Default)]
pub struct Reloader {
    hook: Arc<Mutex<Option<Arc<ReloadFn>>>>,
}

impl fmt::Debug for Reloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reloader")
    }
}

impl Reloader {
    /// A reloader running `hook` (`None`: reloads are not supported).
    pub fn new(hook: Option<Arc<ReloadFn>>) -> Self {
        Reloader {
            hook: Arc::new(Mutex::new(hook)),
        }
    }

    /// Installs (or replaces) the hook, for every clone.
    pub fn set(&self, hook: Arc<ReloadFn>) {
        *self.hook.lock().unwrap_or_else(PoisonError::into_inner) = Some(hook);
    }

    /// Reloads now, on behalf of `origin` (`SIGHUP`, `POST /api/reload`),
    /// and logs the result: info when applied, warn otherwise.
    pub fn reload(&self, origin: &str) -> Reload {
        let hook = self.hook.lock().unwrap_or_else(PoisonError::into_inner);
        let result = match hook.as_deref() {
            None => Reload::Unsupported,
            Some(run) => match run() {
                Ok(summary) => Reload::Done(summary),
                Err(why) => Reload::Failed(why),
            },
        };
        drop(hook);
        match &result {
            Reload::Done(summary) => info!("{origin}: configuration reloaded: {summary}"),
            Reload::Failed(why) => warn!("{origin}: {why}; reload failed, still running"),
            Reload::Unsupported => warn!("{origin}: {UNSUPPORTED}; still running"),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn clones_share_the_hook() {
        let r = Reloader::default();
        let other = r.clone();
        assert_eq!(other.reload("test"), Reload::Unsupported);
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&calls);
        r.set(Arc::new(move || {
            match seen.fetch_add(1, Ordering::Relaxed) {
                0 => Ok("1 backend added".into()),
                _ => Err("line 3: unknown key".into()),
            }
        }));
        assert_eq!(other.reload("test"), Reload::Done("1 backend added".into()));
        assert_eq!(
            r.reload("test"),
            Reload::Failed("line 3: unknown key".into())
        );
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }
}
