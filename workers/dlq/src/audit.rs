//! The audit trail: every state-changing operation writes its intent before it acts and its
//! outcome after, as JSON lines appended to a file and emitted as log events. An operation that
//! cannot write its intent does not start.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use cdc_topics::Family;
use serde_json::{Value as Json, json};

use crate::error::DlqError;
use crate::letter::{format_ms, millis};

/// The audit file when neither `--audit-log` nor `DLQ_AUDIT_LOG` says: under the user's state
/// directory (`$XDG_STATE_HOME`, else `~/.local/state`), never the working directory.
pub fn default_path() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("bangumi-cdc/dlq-audit.jsonl")
}

/// An open audit trail, for one operation.
pub struct Audit {
    path: PathBuf,
    file: File,
    who: String,
    reason: String,
    id: String,
}

impl Audit {
    /// Opens `path` for appending (creating its directory) before anything is done, so that an
    /// unwritable trail refuses the operation instead of leaving it unrecorded.
    pub fn open(path: &Path, reason: &str) -> Result<Self, DlqError> {
        let unwritable = |e: std::io::Error| {
            DlqError::Refused(format!(
                "cannot write the audit log {}: {e}; nothing done (set --audit-log or DLQ_AUDIT_LOG to a writable file)",
                path.display()
            ))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(unwritable)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(unwritable)?;
        Ok(Self {
            path: path.to_owned(),
            file,
            who: who(),
            reason: reason.to_owned(),
            id: format!(
                "{}-{}",
                millis(std::time::SystemTime::now()),
                std::process::id()
            ),
        })
    }

    /// The operation's id, shared by its intent and outcome lines (and its handled records).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Writes what `operation` is about to do.
    pub fn intent(
        &mut self,
        operation: &str,
        family: &Family,
        details: Json,
    ) -> Result<(), DlqError> {
        self.write("intent", operation, family, details)
    }

    /// Writes what `operation` did (also when it failed or was interrupted).
    pub fn outcome(
        &mut self,
        operation: &str,
        family: &Family,
        details: Json,
    ) -> Result<(), DlqError> {
        self.write("outcome", operation, family, details)
    }

    fn write(
        &mut self,
        phase: &str,
        operation: &str,
        family: &Family,
        details: Json,
    ) -> Result<(), DlqError> {
        let line = json!({
            "at": format_ms(millis(std::time::SystemTime::now())),
            "id": self.id,
            "phase": phase,
            "operation": operation,
            "who": self.who,
            "reason": self.reason,
            "family": family.family,
            "dlq": family.dlq,
            "details": details,
        });
        tracing::info!(audit = %line, operation, phase, family = %family.family, "dlq audit");
        writeln!(self.file, "{line}")
            .and_then(|()| self.file.sync_data())
            .map_err(|e| DlqError::Other(anyhow::anyhow!("audit log {}: {e}", self.path.display())))
    }
}

/// Who runs the tool: the login name, else the host (a pod's name in Kubernetes).
fn who() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .or_else(|| {
            let host = std::env::var("HOSTNAME").ok().or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })?;
            Some(format!("host:{host}"))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Letter coordinates in a compact readable form: `p0@3-7,9 p1@2` (DLQ partition, offsets).
pub fn coordinates(letters: impl IntoIterator<Item = (i32, i64)>) -> String {
    let sorted: BTreeSet<(i32, i64)> = letters.into_iter().collect();
    let mut spans: BTreeMap<i32, Vec<(i64, i64)>> = BTreeMap::new();
    for (partition, offset) in sorted {
        let partition = spans.entry(partition).or_default();
        match partition.last_mut() {
            Some((_, end)) if *end + 1 == offset => *end = offset,
            _ => partition.push((offset, offset)),
        }
    }
    let span = |&(first, last): &(i64, i64)| {
        if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        }
    };
    spans
        .iter()
        .map(|(p, spans)| {
            let spans: Vec<String> = spans.iter().map(span).collect();
            format!("p{p}@{}", spans.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_are_spans_per_partition() {
        assert_eq!(
            coordinates([(1, 2), (0, 3), (0, 4), (0, 5), (0, 9), (0, 7), (0, 6)]),
            "p0@3-7,9 p1@2"
        );
        assert_eq!(coordinates([]), "");
    }
}
