//! The process metrics Prometheus' client libraries export by convention
//! (`process_open_fds`, `process_max_fds`, `process_start_time_seconds`),
//! read from `/proc` and `getrlimit` when `/metrics` is read, and the
//! build's version for `tidegate_build_info`.

use std::fs;

use rlimit::Resource;

/// The version `tidegate_build_info{version}` reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Entries read from `/proc/self/fd` at most: far above any soft limit
/// tidegate runs with (it raises the soft limit to the hard one), so
/// the count is exact, while bounding the loop.
const MAX_FDS_COUNTED: usize = 16 * 1024 * 1024;

/// Clock ticks per second of `/proc/<pid>/stat` times. The kernel reports
/// them in USER_HZ, fixed at 100 in the Linux user-space ABI on every
/// architecture tidegate builds for (what `sysconf(_SC_CLK_TCK)` returns).
const USER_HZ: f64 = 100.0;

/// The process, read at one moment; `None` where `/proc` could not tell.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessView {
    pub open_fds: Option<u64>,
    /// The soft RLIMIT_NOFILE (what opening one more descriptor meets).
    pub max_fds: Option<u64>,
    /// Unix time the process started, in seconds.
    pub start_time_s: Option<f64>,
}

impl ProcessView {
    /// Reads the process now.
    pub fn read() -> Self {
        ProcessView {
            open_fds: open_fds(),
            max_fds: Resource::NOFILE.get().ok().map(|(soft, _)| soft),
            start_time_s: start_time_s(),
        }
    }
}

/// Descriptors open now (the directory's own descriptor is left out).
fn open_fds() -> Option<u64> {
    let n = fs::read_dir("/proc/self/fd")
        .ok()?
        .take(MAX_FDS_COUNTED)
        .count();
    u64::try_from(n.saturating_sub(1)).ok()
}

/// Boot time (`btime` in `/proc/stat`) plus the process' start in ticks
/// after boot (field 22 of `/proc/self/stat`).
fn start_time_s() -> Option<f64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let boot: f64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let own = fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted after its last ')', where field 3 starts.
    let after = own.get(own.rfind(')')? + 1..)?;
    let ticks: f64 = after.split_whitespace().nth(22 - 3)?.parse().ok()?;
    Some(boot + ticks / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_is_read_from_proc() {
        let p = ProcessView::read();
        let open = p.open_fds.unwrap_or_default();
        let max = p.max_fds.unwrap_or_default();
        assert!(open >= 3 && open <= max, "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let start = p.start_time_s.unwrap_or_default();
        // Started before now, and not long ago (tests run for minutes).
        assert!(
            start <= now + 1.0 && now - start < 3600.0,
            "{start} vs {now}"
        );
    }
}
