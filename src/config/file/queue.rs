//! The queue's keys: `queue_timeout` and `max_queue`.

use super::{Check, FileConfig};
use crate::config::{MAX_MAX_QUEUE, QueueConfig};

impl FileConfig {
    /// `queue_timeout` and `max_queue`, or their defaults.
    pub(super) fn queue(&self, c: &mut Check<'_>) -> Option<QueueConfig> {
        let d = QueueConfig::default();
        let timeout = match &self.queue_timeout {
            Some(v) => c.get("queue_timeout", v, QueueConfig::parse_timeout),
            None => Some(d.timeout),
        };
        let max = match &self.max_queue {
            Some(v) => match QueueConfig::check_max("max_queue", *v.get_ref()) {
                Ok(n) => Some(n),
                Err(_) => {
                    let why = format!("out of range (0..={MAX_MAX_QUEUE})");
                    c.fail("max_queue", v.span(), &why)
                }
            },
            None => Some(d.max),
        };
        Some(QueueConfig {
            timeout: timeout?,
            max: max?,
        })
    }
}
