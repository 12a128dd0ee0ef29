//! The request log's keys: `access_log` (a path or `stdout`) with
//! `access_log_format`, and `log_csv`, the csv format's alias.

use std::path::PathBuf;

use super::{Check, FileConfig};
use crate::config::ConfigError;
use crate::proxy::accesslog::{AccessLog, LogFormat, LogTarget};

impl FileConfig {
    /// The request log, or `None` inside the option for no log; the outer
    /// `None` means a problem was recorded.
    pub(super) fn access_log(&self, c: &mut Check<'_>) -> Option<Option<AccessLog>> {
        let format = match &self.access_log_format {
            Some(v) => c.get("access_log_format", v, |key, s| {
                s.parse::<LogFormat>().map_err(|why| ConfigError::BadValue {
                    flag: key,
                    value: s.to_string(),
                    why,
                })
            })?,
            None => LogFormat::Json,
        };
        match (&self.access_log, &self.log_csv) {
            (Some(_), Some(csv)) => {
                let why = "give either access_log or log_csv (its csv alias), not both";
                c.fail("log_csv", csv.span(), why)
            }
            (Some(target), None) => Some(Some(AccessLog {
                target: LogTarget::parse(target.get_ref()),
                format,
            })),
            (None, Some(path)) => Some(Some(AccessLog {
                target: LogTarget::File(PathBuf::from(path.get_ref())),
                format: LogFormat::Csv,
            })),
            (None, None) => Some(None),
        }
    }
}
