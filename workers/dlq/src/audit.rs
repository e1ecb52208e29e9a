//! The audit trail: one JSON line per state-changing operation (who, when, what, how many),
//! appended to a file and emitted as a log event.

use std::io::Write;
use std::path::PathBuf;

use cdc_topics::Family;
use serde_json::{Value as Json, json};

use crate::error::DlqError;
use crate::letter::{format_ms, millis};

/// Where audit lines go.
pub struct Audit {
    path: PathBuf,
}

impl Audit {
    /// An audit trail appended to `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Appends `{at, who, host, operation, family, dlq, details}` and logs it.
    pub fn write(&self, operation: &str, family: &Family, details: Json) -> Result<(), DlqError> {
        let line = json!({
            "at": format_ms(millis(std::time::SystemTime::now())),
            "who": std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into()),
            "host": std::env::var("HOSTNAME").unwrap_or_default(),
            "operation": operation,
            "family": family.family,
            "dlq": family.dlq,
            "details": details,
        });
        tracing::info!(audit = %line, operation, family = %family.family, "dlq audit");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| {
                DlqError::Other(anyhow::anyhow!("audit log {}: {e}", self.path.display()))
            })?;
        writeln!(file, "{line}")
            .map_err(|e| DlqError::Other(anyhow::anyhow!("audit log {}: {e}", self.path.display())))
    }
}
