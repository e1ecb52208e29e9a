//! Shadow mode (`RUN_MODE=shadow`): a family decides each record's effects exactly as in live
//! mode and applies none; it reports them instead, and may compare them with what the legacy
//! worker does to the same Redis.
//!
//! A handler passes its effects through [`Effects`] at the point where it would apply them:
//! live, [`Effects::redis`] runs the pipeline; shadow, it records the pipeline's commands as the
//! records' planned effects. Stores without a pipeline (SQL, Meilisearch, S3) record theirs with
//! [`Effects::plan`]. Planned effects go to
//! - `<SHADOW_PLANS_DIR>/<family>.plans.jsonl`, one JSON line per record (or per merged batch:
//!   `offset`…`last_offset`), rotated at `SHADOW_PLANS_MAX_BYTES` into `.1`, `.2`… keeping
//!   `SHADOW_PLANS_FILES` files;
//! - [`metric::SHADOW_PLANNED`] by kind;
//! - with `SHADOW_COMPARE=on`, the comparison ([`compare`]).
//!
//! The runtime records a dead letter the same way (kind `dead_letter`) and never produces it: the
//! DLQ is shared with the live worker.
//!
//! # Layout
//! - [`Effect`], [`redis_effects`]: one planned effect; a Redis pipeline's.
//! - [`Effects`]: the handle handlers and the pipeline use (live or shadow).
//! - `PlanFile`: the bounded, rotating JSON-lines file.
//! - [`compare`]: the comparison with the legacy worker.

pub mod compare;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use metrics::counter;
use serde::Serialize;

use crate::config::WorkerConfig;
use crate::family::Record;
use crate::observe::metric;

/// One effect a record would have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Effect {
    /// What it does: a Redis command in lower case (`del`, `zadd`, `publish`…), `insert`,
    /// `update`, `delete` (SQL rows), `upsert_document`/`delete_document` (search),
    /// `delete_object` (S3), `dead_letter`.
    pub kind: String,
    /// What it touches: a Redis key or channel, a table, an index, an object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Further arguments (a Redis command's, as text; lossy for binary values).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// A row or document written, or a dead letter's stage, class and error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

impl Effect {
    /// An effect of `kind` on `key`.
    pub fn on(kind: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            key: Some(key.into()),
            args: Vec::new(),
            value: None,
        }
    }

    /// The same, with `value`.
    pub fn with_value(mut self, value: serde_json::Value) -> Self {
        self.value = Some(value);
        self
    }
}

/// `kind key args…` (`-` for no key), as the unit tests compare effects.
impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.key.as_deref().unwrap_or("-"))?;
        self.args.iter().try_for_each(|arg| write!(f, " {arg}"))
    }
}

/// Redis commands whose every argument is a key: one effect per key.
const ALL_KEYS_COMMANDS: &[&str] = &["del", "unlink"];

/// The effects of `pipe`'s commands: `DEL a b` → `del a`, `del b`; any other command → its name
/// (lower case), its first argument as the key, the rest as arguments.
pub fn redis_effects(pipe: &redis::Pipeline) -> Vec<Effect> {
    let mut effects = Vec::new();
    for cmd in pipe.cmd_iter() {
        let mut args = cmd.args_iter().map(|arg| match arg {
            redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            _ => "0".to_owned(),
        });
        let Some(name) = args.next() else { continue };
        let kind = name.to_ascii_lowercase();
        if ALL_KEYS_COMMANDS.contains(&kind.as_str()) {
            effects.extend(args.map(|key| Effect::on(kind.clone(), key)));
        } else {
            effects.push(Effect {
                key: args.next(),
                args: args.collect(),
                kind,
                value: None,
            });
        }
    }
    effects
}

/// One line of the planned-effects file.
#[derive(Serialize)]
struct PlanLine<'a> {
    family: &'a str,
    topic: &'a str,
    partition: i32,
    offset: i64,
    /// For effects merged over a batch: its last record's offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_offset: Option<i64>,
    table: &'a str,
    effects: &'a [Effect],
}

/// How a family's effects are applied: live (executed) or shadow (planned and reported).
/// Cloned freely; every clone of a shadow writes to the same file and comparison.
#[derive(Clone)]
pub struct Effects {
    shadow: Option<Arc<Shadow>>,
}

struct Shadow {
    family: String,
    plans: Mutex<PlanFile>,
    compare: Option<compare::Feed>,
}

/// The shadows of this process by family, plans directory and key prefix: the handler's and the
/// pipeline's are one.
type Registry = Mutex<HashMap<(String, PathBuf, String), Effects>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

impl Effects {
    /// Effects applied as they come (live mode).
    pub fn live() -> Self {
        Self { shadow: None }
    }

    /// The effects of `family` per `config`: live, or shadow with its plans file and, with
    /// `SHADOW_COMPARE=on`, the comparison of `compared` with the legacy worker's effects
    /// (connects to Redis and checks its keyspace notifications first; none if `compared` is
    /// empty).
    pub async fn open(
        config: &WorkerConfig,
        family: &str,
        compared: compare::Compared,
    ) -> anyhow::Result<Self> {
        if !config.is_shadow() {
            return Ok(Self::live());
        }
        let id = registry_id(config, family);
        if let Some(existing) = lock(registry()).get(&id) {
            return Ok(existing.clone());
        }
        let compare = if config.shadow_compare != "on" {
            None
        } else if compared.is_empty() {
            // SHADOW_COMPARE is on by default in the chart: a family with nothing to compare
            // plans only, and says so, rather than fail to start.
            tracing::info!(
                family,
                "SHADOW_COMPARE=on: nothing of this family is compared (its effects have no key format the comparison watches); its plans are reported only"
            );
            None
        } else {
            Some(compare::start(config, family, compared).await?)
        };
        let effects = Self::shadow(config, family, compare)?;
        lock(registry()).insert(id, effects.clone());
        Ok(effects)
    }

    /// The effects the runtime itself plans for `family` (dead letters): the handler's, if it
    /// opened them, else shadow effects without comparison (or live ones).
    pub fn of(config: &WorkerConfig, family: &str) -> anyhow::Result<Self> {
        if !config.is_shadow() {
            return Ok(Self::live());
        }
        let id = registry_id(config, family);
        let mut registry = lock(registry());
        if let Some(existing) = registry.get(&id) {
            return Ok(existing.clone());
        }
        let effects = Self::shadow(config, family, None)?;
        registry.insert(id, effects.clone());
        Ok(effects)
    }

    fn shadow(
        config: &WorkerConfig,
        family: &str,
        compare: Option<compare::Feed>,
    ) -> anyhow::Result<Self> {
        let plans = PlanFile::open(
            &config.shadow_plans_dir,
            family,
            config.shadow_plans_max_bytes,
            config.shadow_plans_files,
        )?;
        tracing::info!(family, plans = %plans.path.display(), compare = compare.is_some(), "shadow mode: effects are planned and reported, none applied");
        Ok(Self {
            shadow: Some(Arc::new(Shadow {
                family: family.to_owned(),
                plans: Mutex::new(plans),
                compare,
            })),
        })
    }

    /// Whether effects are planned rather than applied.
    pub fn is_shadow(&self) -> bool {
        self.shadow.is_some()
    }

    /// Runs `pipe` on `redis` (live), or records its commands as the planned effects of
    /// `records` (shadow: one line for one record, else one line for the batch).
    pub async fn redis<C: redis::aio::ConnectionLike + Send>(
        &self,
        redis: &mut C,
        pipe: &redis::Pipeline,
        records: &[Record],
    ) -> redis::RedisResult<()> {
        if self.is_shadow() {
            self.plan(records, redis_effects(pipe));
            Ok(())
        } else {
            pipe.query_async::<()>(redis).await
        }
    }

    /// Records `effects` as planned by `records` (nothing live; nothing if `effects` is empty):
    /// a line of the plans file, the metric by kind, and the comparison's feed.
    pub fn plan(&self, records: &[Record], effects: Vec<Effect>) {
        let (Some(shadow), Some(first), Some(last)) =
            (&self.shadow, records.first(), records.last())
        else {
            return;
        };
        if effects.is_empty() {
            return;
        }
        let table = cdc_schemas::topic_table(&first.at.topic);
        self.write(&PlanLine {
            family: &shadow.family,
            topic: &first.at.topic,
            partition: first.at.partition,
            offset: first.at.offset,
            last_offset: (records.len() > 1).then_some(last.at.offset),
            table,
            effects: &effects,
        });
        if let Some(feed) = &shadow.compare {
            feed.planned(table, effects);
        }
    }

    /// Records the dead letter of the record at `topic`/`partition`/`offset` (shadow only).
    pub fn plan_dead_letter(
        &self,
        (topic, partition, offset): (&str, i32, i64),
        stage: &str,
        class: &str,
        error: &str,
    ) {
        let Some(shadow) = &self.shadow else { return };
        let effect = Effect {
            kind: "dead_letter".into(),
            key: None,
            args: Vec::new(),
            value: Some(serde_json::json!({"stage": stage, "class": class, "error": error})),
        };
        self.write(&PlanLine {
            family: &shadow.family,
            topic,
            partition,
            offset,
            last_offset: None,
            table: cdc_schemas::topic_table(topic),
            effects: std::slice::from_ref(&effect),
        });
    }

    fn write(&self, line: &PlanLine<'_>) {
        let Some(shadow) = &self.shadow else { return };
        for effect in line.effects {
            counter!(metric::SHADOW_PLANNED, "family" => shadow.family.clone(), "kind" => effect.kind.clone())
                .increment(1);
        }
        let mut text = match serde_json::to_vec(line) {
            Ok(text) => text,
            Err(error) => {
                tracing::error!(family = %shadow.family, %error, "encoding a planned-effects line");
                return;
            }
        };
        text.push(b'\n');
        if let Err(error) = lock(&shadow.plans).append(&text) {
            tracing::error!(family = %shadow.family, %error, "writing the planned-effects file");
        }
    }
}

fn registry_id(config: &WorkerConfig, family: &str) -> (String, PathBuf, String) {
    (
        family.to_owned(),
        config.shadow_plans_dir.clone(),
        config.redis_key_prefix.clone(),
    )
}

/// `mutex`'s guard, even if a holder panicked (the data stays usable: a file, a map).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `<dir>/<family>.plans.jsonl`, rotated to `.1.jsonl`, `.2.jsonl`… at `max_bytes`, keeping
/// `files` files in all.
struct PlanFile {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
    files: usize,
}

impl PlanFile {
    fn open(dir: &Path, family: &str, max_bytes: u64, files: usize) -> anyhow::Result<Self> {
        let unwritable = |e: std::io::Error| {
            anyhow::anyhow!(
                "SHADOW_PLANS_DIR {}: cannot write the planned-effects file there: {e}",
                dir.display()
            )
        };
        std::fs::create_dir_all(dir).map_err(unwritable)?;
        let path = dir.join(format!("{family}.plans.jsonl"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(unwritable)?;
        let written = file.metadata().map_err(unwritable)?.len();
        Ok(Self {
            path,
            file,
            written,
            max_bytes,
            files,
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        self.path.with_extension(format!("{n}.jsonl"))
    }

    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.written > 0 && self.written + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.written += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let oldest = self.files.saturating_sub(1);
        if oldest == 0 {
            self.file.set_len(0)?;
        } else {
            for n in (1..oldest).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
        self.written = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_becomes_one_effect_per_deleted_key_and_one_per_other_command() {
        let mut pipe = redis::pipe();
        pipe.del(&["a:1", "b:2"]).ignore();
        pipe.zadd("z:1", "m", 5).ignore();
        pipe.publish("chan", "hello").ignore();
        let effects = redis_effects(&pipe);
        let shown: Vec<_> = effects.iter().map(Effect::to_string).collect();
        assert_eq!(
            shown,
            ["del a:1", "del b:2", "zadd z:1 5 m", "publish chan hello"]
        );
    }

    #[test]
    fn the_plans_file_rotates_and_keeps_its_files() {
        let dir = std::env::temp_dir().join(format!("cdc-shadow-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut plans = PlanFile::open(&dir, "f", 10, 3).unwrap_or_else(|e| panic!("{e}"));
        for n in 0..5 {
            plans
                .append(format!("line {n}..\n").as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        assert_eq!(read(dir.join("f.plans.jsonl")), "line 4..\n");
        assert_eq!(read(dir.join("f.plans.1.jsonl")), "line 3..\n");
        assert_eq!(read(dir.join("f.plans.2.jsonl")), "line 2..\n");
        assert!(!dir.join("f.plans.3.jsonl").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_plans_directory_is_named() {
        let err = PlanFile::open(Path::new("/proc/cdc-shadow"), "f", 10, 1)
            .err()
            .unwrap_or_else(|| panic!("must fail"));
        assert!(
            err.to_string()
                .starts_with("SHADOW_PLANS_DIR /proc/cdc-shadow"),
            "{err}"
        );
    }
}
