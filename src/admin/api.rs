//! The admin API: runtime control of backends, readiness and reload, in
//! the manner of HAProxy's `set server state drain|ready`.
//!
//! - `GET /api/backends`: a JSON array, one object per backend:
//!   `{"name", "address", "weight", "state", "in_flight", "health"}`,
//!   where `state` is `up`, `down` (failing active checks), `ejected`
//!   (outlier detection) or `drained` (by an operator), and `health` is
//!   the active check's verdict (`"up"`, `"down"`) or `null` without
//!   `--health-check`. `weight` is 1: weights are not configurable yet.
//! - `POST /api/backends/{name-or-address}/drain`: the backend takes no
//!   new request; its requests in flight finish; its pooled connections
//!   close. `POST .../enable` puts it back. Answers the backend's new
//!   object (an array when a name covers several backends); an unknown
//!   backend is 404.
//! - `POST /api/reload`: the same reload as SIGHUP (one code path,
//!   [`Reloader`]): 200 when applied, 500 when the new configuration was
//!   refused, 501 while there is no reload (no `--config`).
//! - `GET /readyz`: 200 while at least one backend is up, else 503.
//!
//! Errors are `{"error": "..."}`. Everything here reads or flips the
//! proxy's atomics; nothing waits on the data path.

use std::fmt::Write as _;

use log::info;

use super::http::Reply;
use super::json::string;
use crate::proxy::Shared;
use crate::runtime::reload::{self, Reload, Reloader};

/// The `Content-Type` of API answers.
pub const CONTENT_TYPE: &str = "application/json";

/// Longest backend key accepted in a path: a host name (253) and a port.
const MAX_KEY: usize = 300;

/// What `POST /api/backends/{b}/...` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Drain,
    Enable,
}

impl Action {
    /// `drain` or `enable`, as in the path.
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "drain" => Some(Action::Drain),
            "enable" => Some(Action::Enable),
            _ => None,
        }
    }
}

/// A JSON reply.
fn json(status: u16, body: String) -> Reply {
    Reply::new(status, CONTENT_TYPE, body)
}

/// `{"error": why}` with `status`.
pub fn error(status: u16, why: &str) -> Reply {
    json(status, format!("{{\"error\":{}}}\n", string(why)))
}

/// One backend's object.
pub fn backend(shared: &Shared, i: usize) -> String {
    let (name, address, weight, backup) = shared.backends.get(i).map_or_else(
        || (String::new(), String::new(), 0, false),
        |b| (b.name.clone(), b.addr.to_string(), b.weight, b.backup),
    );
    let health = match shared.active.as_ref().map(|a| a.is_up(i)) {
        Some(true) => "\"up\"",
        Some(false) => "\"down\"",
        None => "null",
    };
    format!(
        "{{\"name\":{},\"address\":{},\"weight\":{weight},\"backup\":{backup},\"state\":\"{}\",\"in_flight\":{},\"health\":{health}}}",
        string(&name),
        string(&address),
        shared.backend_state(i).as_str(),
        shared.metrics.in_flight(i),
    )
}

/// `GET /api/backends`.
pub fn backends(shared: &Shared) -> Reply {
    json(
        200,
        list((0..shared.backends.len()).map(|i| backend(shared, i))),
    )
}

fn list(items: impl Iterator<Item = String>) -> String {
    let mut o = String::from("[");
    for (i, item) in items.enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str(&item);
    }
    o.push_str("]\n");
    o
}

/// The backends `key` names: every backend with that name, or else the
/// one at that address (`127.0.0.1:8081`). `key` may be percent-encoded.
pub fn find(shared: &Shared, key: &str) -> Vec<usize> {
    let Some(key) = percent_decode(key) else {
        return Vec::new();
    };
    let by_name: Vec<usize> = (0..shared.backends.len())
        .filter(|&i| shared.backends.get(i).is_some_and(|b| b.name == key))
        .collect();
    if !by_name.is_empty() {
        return by_name;
    }
    (0..shared.backends.len())
        .filter(|&i| {
            shared
                .backends
                .get(i)
                .is_some_and(|b| b.addr.to_string() == key)
        })
        .collect()
}

/// `POST /api/backends/{key}/drain|enable`.
pub fn act(shared: &Shared, key: &str, action: Action) -> Reply {
    if key.len() > MAX_KEY {
        return error(404, "no such backend (name or address too long)");
    }
    let found = find(shared, key);
    if found.is_empty() {
        return error(
            404,
            &format!("no backend named or at '{key}' (see GET /api/backends)"),
        );
    }
    let drain = action == Action::Drain;
    for &i in &found {
        let was = shared.drained.set(i, drain);
        let name = shared.backends.get(i).map_or("", |b| b.name.as_str());
        if was != Some(drain) {
            let what = if drain {
                "drained: takes no new requests"
            } else {
                "enabled"
            };
            info!("admin API: backend {name} (#{i}) {what}");
        }
    }
    match found.as_slice() {
        [one] => json(200, format!("{}\n", backend(shared, *one))),
        many => json(200, list(many.iter().map(|&i| backend(shared, i)))),
    }
}

/// `POST /api/reload`: the SIGHUP path.
pub fn reload(reloader: &Reloader) -> Reply {
    match reloader.reload("POST /api/reload") {
        Reload::Done(summary) => json(
            200,
            format!("{{\"reloaded\":true,\"summary\":{}}}\n", string(&summary)),
        ),
        Reload::Failed(why) => json(
            500,
            format!(
                "{{\"reloaded\":false,\"error\":{}}}\n",
                string(&format!("reload failed, still running: {why}"))
            ),
        ),
        Reload::Unsupported => error(501, reload::UNSUPPORTED),
    }
}

/// `GET /readyz`.
pub fn ready(shared: &Shared) -> Reply {
    if shared.ready() {
        Reply::text(200, "ready")
    } else {
        let mut why = String::from("not ready: no usable backend (");
        for i in 0..shared.backends.len() {
            let name = shared.backends.get(i).map_or("", |b| b.name.as_str());
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(why, "{sep}{name} {}", shared.backend_state(i).as_str());
        }
        why.push(')');
        Reply::text(503, &why)
    }
}

/// Decodes `%XX` escapes; `None` for a bad escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    // Bounded: each turn consumes at least one byte.
    while let Some(&c) = bytes.get(i) {
        if c == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("127.0.0.1%3A8081").as_deref(),
            Some("127.0.0.1:8081")
        );
        assert_eq!(percent_decode("alpha").as_deref(), Some("alpha"));
        assert_eq!(percent_decode("a%2"), None);
        assert_eq!(percent_decode("a%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn actions_parse() {
        assert_eq!(Action::parse("drain"), Some(Action::Drain));
        assert_eq!(Action::parse("enable"), Some(Action::Enable));
        assert_eq!(Action::parse("ready"), None);
    }
}
