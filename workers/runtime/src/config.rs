//! Worker configuration: environment variables (12-factor, the same names in every binary) with
//! command-line overrides, validated before the first poll.
//!
//! This is not where topics, groups and retry policies live: those come from `topics/` (the
//! [`cdc_topics::Family`] of the binary); settings here only override them per deployment.
//!
//! # Layout
//! - [`WorkerConfig`]: every setting, with its variable name, default and meaning.
//! - [`WorkerConfig::kafka_properties`]: the librdkafka properties, passthrough included.
//! - [`WorkerConfig::redacted`]: the printable form (`--print-config`), secrets masked.
//! - [`ConfigError`]: an invalid setting, named.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use cdc_topics::Family;

/// Prefix of environment variables passed to librdkafka as properties:
/// `KAFKA_CONFIG__SESSION_TIMEOUT_MS=2000` sets `session.timeout.ms=2000`.
pub const KAFKA_PASSTHROUGH_PREFIX: &str = "KAFKA_CONFIG__";

/// librdkafka properties the runtime owns; setting them through the passthrough would break
/// the at-least-once guarantee, so they are rejected.
const RUNTIME_OWNED_PROPERTIES: &[&str] = &[
    "enable.auto.offset.store",
    "group.id",
    "bootstrap.servers",
    "enable.auto.commit",
];

/// Every setting of a worker. Each reads an environment variable; the flag of the same name wins.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerConfig {
    /// Kafka bootstrap servers, comma separated.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Consumer group id; defaults to the family's group from `topics/`.
    #[arg(long, env = "KAFKA_GROUP_ID")]
    pub kafka_group_id: Option<String>,

    /// Prefix added to every topic of the family, DLQ included (isolated copies, tests).
    #[arg(long, env = "KAFKA_TOPIC_PREFIX", default_value = "")]
    pub kafka_topic_prefix: String,

    /// `security.protocol` (plaintext, ssl, sasl_plaintext, sasl_ssl).
    #[arg(long, env = "KAFKA_SECURITY_PROTOCOL")]
    pub kafka_security_protocol: Option<String>,

    /// `sasl.mechanism` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
    #[arg(long, env = "KAFKA_SASL_MECHANISM")]
    pub kafka_sasl_mechanism: Option<String>,

    /// `sasl.username`.
    #[arg(long, env = "KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,

    /// `sasl.password` (secret).
    #[arg(long, env = "KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub kafka_sasl_password: Option<String>,

    /// `ssl.ca.location`: CA bundle to verify the brokers.
    #[arg(long, env = "KAFKA_SSL_CA_LOCATION")]
    pub kafka_ssl_ca_location: Option<String>,

    /// Extra librdkafka properties as `name=value` (repeatable); `KAFKA_CONFIG__<NAME>` variables
    /// are read too (`KAFKA_CONFIG__FETCH_WAIT_MAX_MS=50` → `fetch.wait.max.ms=50`).
    #[arg(long = "kafka-config", value_name = "NAME=VALUE", value_parser = parse_property)]
    pub kafka_config: Vec<(String, String)>,

    /// Redis connection URI (`redis://[user:pass@]host:port/db`).
    #[arg(long, env = "REDIS_URI", default_value = "redis://127.0.0.1:6379/0")]
    pub redis_uri: String,

    /// Prefix for every Redis key the worker touches. Production leaves it empty (Bangumi's keys
    /// have none); tests and staging set it to share one Redis.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "")]
    pub redis_key_prefix: String,

    /// MySQL/MariaDB host.
    #[arg(long, env = "MYSQL_HOST", default_value = "127.0.0.1")]
    pub mysql_host: String,

    /// MySQL/MariaDB port.
    #[arg(long, env = "MYSQL_PORT", default_value_t = 3306)]
    pub mysql_port: u16,

    /// MySQL/MariaDB user.
    #[arg(long, env = "MYSQL_USER", default_value = "root")]
    pub mysql_user: String,

    /// MySQL/MariaDB password (secret).
    #[arg(long, env = "MYSQL_PASS", default_value = "", hide_env_values = true)]
    pub mysql_pass: String,

    /// MySQL/MariaDB database.
    #[arg(long, env = "MYSQL_DB", default_value = "bangumi")]
    pub mysql_db: String,

    /// Confluent-compatible schema registry, needed only for Avro topics.
    #[arg(long, env = "SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,

    /// Address of the HTTP server with `/metrics`, `/healthz` and `/readyz` (port 0: any).
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:9464")]
    pub http_addr: SocketAddr,

    /// Most records per batch; defaults to the family's `batch.max_messages`.
    #[arg(long, env = "BATCH_MAX_MESSAGES")]
    pub batch_max_messages: Option<usize>,

    /// Longest wait to fill a batch (e.g. `5ms`); defaults to the family's `batch.max_wait`.
    #[arg(long, env = "BATCH_MAX_WAIT", value_parser = humantime::parse_duration)]
    pub batch_max_wait: Option<Duration>,

    /// Most bytes of records the consumer prefetches, all its partitions together (`32MiB`,
    /// `512KiB`, or plain bytes). Split evenly over the partitions the worker subscribes to:
    /// the most one replica can be assigned, which it is when the others are gone.
    #[arg(long, env = "PREFETCH_BUDGET", default_value = "32MiB", value_parser = parse_bytes)]
    pub prefetch_budget: u64,

    /// Interval of the asynchronous offset commits.
    #[arg(long, env = "COMMIT_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub commit_interval: Duration,

    /// On SIGTERM, how long in-flight batches may take before the worker exits anyway (their
    /// offsets then stay uncommitted and the records are redelivered).
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// How often the DLQ's pending letters are counted for `cdc_dlq_pending` and
    /// `cdc_dlq_oldest_pending_age_seconds` (off the consumption path).
    #[arg(long, env = "DLQ_METRICS_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub dlq_metrics_interval: Duration,

    /// Log format: `json` (production) or `text`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    pub log_format: String,

    /// Log payload bytes of failing records (off by default: payloads may hold personal data).
    #[arg(long, env = "LOG_PAYLOADS", default_value_t = false)]
    pub log_payloads: bool,

    /// `live` applies effects; `shadow` decides them exactly as live does and applies none,
    /// reporting them instead ([`crate::shadow`]), under the group `<group>.shadow`.
    #[arg(long, env = "RUN_MODE", value_enum, default_value_t = RunMode::Live)]
    pub run_mode: RunMode,

    /// Shadow mode: directory of the planned-effects files (`<family>.plans.jsonl`, rotated);
    /// created if missing.
    #[arg(long, env = "SHADOW_PLANS_DIR", default_value = "/tmp/cdc-shadow")]
    pub shadow_plans_dir: std::path::PathBuf,

    /// Shadow mode: size at which the planned-effects file is rotated (`64MiB`, `512KiB`…).
    #[arg(long, env = "SHADOW_PLANS_MAX_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub shadow_plans_max_bytes: u64,

    /// Shadow mode: planned-effects files kept, the current one included.
    #[arg(long, env = "SHADOW_PLANS_FILES", default_value_t = 4)]
    pub shadow_plans_files: usize,

    /// Shadow mode: compare the plans with what the legacy worker does to Redis (keyspace
    /// notifications and published messages), `on` or `off`.
    #[arg(long, env = "SHADOW_COMPARE", default_value = "off", value_parser = ["on", "off"])]
    pub shadow_compare: String,

    /// Shadow mode: how long a planned effect waits for the legacy worker's (and back) before
    /// it counts as made by one side only.
    #[arg(long, env = "SHADOW_COMPARE_WINDOW", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shadow_compare_window: Duration,

    /// Shadow mode: interval of the comparison's summary log line.
    #[arg(long, env = "SHADOW_COMPARE_SUMMARY", default_value = "60s", value_parser = humantime::parse_duration)]
    pub shadow_compare_summary: Duration,
}

/// Whether a worker applies its effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunMode {
    /// Applies effects (production).
    Live,
    /// Applies none: plans them, reports them, and compares them if asked.
    Shadow,
}

/// A setting that cannot work, named.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting has a value the worker cannot use.
    #[error("invalid setting {name}: {reason}")]
    Invalid {
        /// Variable (or flag) name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(name: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

/// `n`, `nKiB`, `nMiB` or `nGiB` (also `K`, `M`, `G`, `Ki`, `Mi`, `Gi`, any case) in bytes.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("expected a size such as 32MiB, got {text:?}"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => 1 << 10,
        "m" | "mi" | "mib" => 1 << 20,
        "g" | "gi" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB or GiB)")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))?;
    Ok((name.trim().to_owned(), value.to_owned()))
}

impl WorkerConfig {
    /// Parses settings from command-line style arguments (the environment too), exactly as the
    /// binaries do; for tests and tools that embed a worker. Call [`WorkerConfig::finish`] next.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        #[command(args_override_self = true)]
        struct Args {
            #[command(flatten)]
            config: WorkerConfig,
        }
        let args = std::iter::once(std::ffi::OsString::from("worker"))
            .chain(args.into_iter().map(Into::into));
        Ok(<Args as clap::Parser>::try_parse_from(args)?.config)
    }

    /// Reads `KAFKA_CONFIG__*` variables into the passthrough map (flags win) and checks every
    /// setting against the family. Called once, before anything connects.
    pub fn finish(self, family: &Family) -> Result<Self, ConfigError> {
        let config = self.finish_without_family()?;
        if family.encoding == cdc_topics::Encoding::Avro && config.schema_registry_url.is_none() {
            return Err(invalid(
                "SCHEMA_REGISTRY_URL",
                format!("family {} reads Avro and needs a registry", family.family),
            ));
        }
        Ok(config)
    }

    /// [`WorkerConfig::finish`] for a binary that consumes no family's topics (the scheduler):
    /// every setting checked, none against a family.
    pub fn finish_without_family(mut self) -> Result<Self, ConfigError> {
        let from_env: Vec<(String, (String, String))> = std::env::vars()
            .filter_map(|(variable, value)| {
                let name = variable.strip_prefix(KAFKA_PASSTHROUGH_PREFIX)?;
                let property = name.to_ascii_lowercase().replace('_', ".");
                Some((variable, (property, value)))
            })
            .collect();
        let from_flags = self.kafka_config.iter().map(|(name, value)| {
            (
                format!("--kafka-config {name}"),
                (name.clone(), value.clone()),
            )
        });
        let mut passthrough = Vec::with_capacity(from_env.len() + self.kafka_config.len());
        for (setting, (property, value)) in from_env.into_iter().chain(from_flags) {
            check_passthrough(&setting, &property, &value)?;
            passthrough.push((property, value));
        }
        self.kafka_config = passthrough;
        self.validate()?;
        Ok(self)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka_brokers.trim().is_empty() {
            return Err(invalid("KAFKA_BROKERS", "must not be empty"));
        }
        if let Some(group) = &self.kafka_group_id
            && group.trim().is_empty()
        {
            return Err(invalid("KAFKA_GROUP_ID", "must not be empty when set"));
        }
        for (variable, property, value) in self.named_kafka_properties() {
            if let Some(value) = value {
                check_property(variable, property, value)?;
            }
        }
        if !(self.redis_uri.starts_with("redis://")
            || self.redis_uri.starts_with("rediss://")
            || self.redis_uri.starts_with("unix://"))
        {
            return Err(invalid(
                "REDIS_URI",
                "must start with redis://, rediss:// or unix://",
            ));
        }
        if let Some(url) = &self.schema_registry_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid("SCHEMA_REGISTRY_URL", "must be an http(s) URL"));
        }
        if self.batch_max_messages == Some(0) {
            return Err(invalid("BATCH_MAX_MESSAGES", "must be ≥ 1"));
        }
        if self.prefetch_budget < 1 << 20 {
            return Err(invalid("PREFETCH_BUDGET", "must be at least 1MiB"));
        }
        if self.commit_interval.is_zero() {
            return Err(invalid("COMMIT_INTERVAL", "must be > 0"));
        }
        if self.dlq_metrics_interval.is_zero() {
            return Err(invalid("DLQ_METRICS_INTERVAL", "must be > 0"));
        }
        if self.shadow_plans_max_bytes < 1 << 10 {
            return Err(invalid("SHADOW_PLANS_MAX_BYTES", "must be at least 1KiB"));
        }
        if self.shadow_plans_files == 0 {
            return Err(invalid("SHADOW_PLANS_FILES", "must be ≥ 1"));
        }
        if self.shadow_compare_window.is_zero() || self.shadow_compare_summary.is_zero() {
            return Err(invalid(
                "SHADOW_COMPARE_WINDOW/SHADOW_COMPARE_SUMMARY",
                "must be > 0",
            ));
        }
        Ok(())
    }

    /// The consumer group: `KAFKA_GROUP_ID` or the family's; with `.shadow` after it in shadow
    /// mode, so that a shadow never moves the live group's offsets.
    pub fn group_id<'a>(&'a self, family: &'a Family) -> std::borrow::Cow<'a, str> {
        let group = self.kafka_group_id.as_deref().unwrap_or(&family.group);
        match self.run_mode {
            RunMode::Live => group.into(),
            RunMode::Shadow => format!("{group}.shadow").into(),
        }
    }

    /// Whether the worker runs in shadow mode.
    pub fn is_shadow(&self) -> bool {
        self.run_mode == RunMode::Shadow
    }

    /// librdkafka properties shared by consumers, producers and admin clients: brokers,
    /// security settings, then the passthrough (which may override anything not runtime-owned).
    pub fn kafka_properties(&self) -> BTreeMap<String, String> {
        let mut props = BTreeMap::new();
        props.insert("bootstrap.servers".into(), self.kafka_brokers.clone());
        for (_, name, value) in self.named_kafka_properties() {
            if let Some(value) = value {
                props.insert(name.into(), value.clone());
            }
        }
        for (name, value) in &self.kafka_config {
            props.insert(name.clone(), value.clone());
        }
        props
    }

    /// The librdkafka properties with a setting of their own: variable, property, value.
    fn named_kafka_properties(&self) -> [(&'static str, &'static str, &Option<String>); 5] {
        [
            (
                "KAFKA_SECURITY_PROTOCOL",
                "security.protocol",
                &self.kafka_security_protocol,
            ),
            (
                "KAFKA_SASL_MECHANISM",
                "sasl.mechanism",
                &self.kafka_sasl_mechanism,
            ),
            (
                "KAFKA_SASL_USERNAME",
                "sasl.username",
                &self.kafka_sasl_username,
            ),
            (
                "KAFKA_SASL_PASSWORD",
                "sasl.password",
                &self.kafka_sasl_password,
            ),
            (
                "KAFKA_SSL_CA_LOCATION",
                "ssl.ca.location",
                &self.kafka_ssl_ca_location,
            ),
        ]
    }

    /// Every setting as `name = value` lines with secrets masked, for `--print-config` and the
    /// start-up log line.
    pub fn redacted(&self, family: &Family) -> String {
        let mut lines = vec![
            format!("family = {}", family.family),
            format!("group = {}", self.group_id(family)),
            format!(
                "topics = {}",
                family.all_topics().collect::<Vec<_>>().join(",")
            ),
            format!("dlq = {}", family.dlq),
        ];
        for (name, value) in self.kafka_properties() {
            lines.push(format!("kafka.{name} = {}", redact_property(&name, &value)));
        }
        lines.extend(self.redacted_stores());
        lines.extend([
            format!(
                "schema_registry_url = {}",
                self.schema_registry_url
                    .as_deref()
                    .map_or("-".into(), redact_uri)
            ),
            format!("http_addr = {}", self.http_addr),
            format!(
                "batch = {} records or {:?}",
                self.batch_max_messages.unwrap_or(family.batch.max_messages),
                self.batch_max_wait.unwrap_or(family.batch.max_wait)
            ),
            format!("prefetch_budget = {} KiB", self.prefetch_budget >> 10),
            format!("commit_interval = {:?}", self.commit_interval),
            format!("drain_timeout = {:?}", self.drain_timeout),
            format!("dlq_metrics_interval = {:?}", self.dlq_metrics_interval),
            format!("log_payloads = {}", self.log_payloads),
            format!("run_mode = {:?}", self.run_mode).to_lowercase(),
        ]);
        if self.is_shadow() {
            lines.extend([
                format!(
                    "shadow_plans = {} ({} files of {} KiB)",
                    self.shadow_plans_dir.display(),
                    self.shadow_plans_files,
                    self.shadow_plans_max_bytes >> 10
                ),
                format!(
                    "shadow_compare = {} (window {:?}, summary every {:?})",
                    self.shadow_compare, self.shadow_compare_window, self.shadow_compare_summary
                ),
            ]);
        }
        lines.join("\n")
    }

    /// The Redis and MySQL settings as `name = value` lines, secrets masked: the part of
    /// [`WorkerConfig::redacted`] a binary without topics prints too.
    pub fn redacted_stores(&self) -> [String; 3] {
        [
            format!("redis_uri = {}", redact_uri(&self.redis_uri)),
            format!("redis_key_prefix = {:?}", self.redis_key_prefix),
            format!(
                "mysql = {}@{}:{}/{} (password {})",
                self.mysql_user,
                self.mysql_host,
                self.mysql_port,
                self.mysql_db,
                if self.mysql_pass.is_empty() {
                    "empty"
                } else {
                    "set"
                }
            ),
        ]
    }
}

/// Checks a passthrough property, set by `setting` (a variable or a flag): one the runtime owns
/// is refused, and librdkafka must accept the rest.
fn check_passthrough(setting: &str, property: &str, value: &str) -> Result<(), ConfigError> {
    if RUNTIME_OWNED_PROPERTIES.contains(&property) {
        return Err(invalid(
            setting,
            format!("{property} is set by the runtime (use the named setting, or none)"),
        ));
    }
    check_property(setting, property, value)
}

/// librdkafka's verdict on `property = value`, set by `setting`: checked before any client is
/// made, so that a wrong value names what set it rather than failing as "creating the Kafka
/// consumer" (secrets masked).
fn check_property(setting: &str, property: &str, value: &str) -> Result<(), ConfigError> {
    let mut config = rdkafka::ClientConfig::new();
    config.set(property, value);
    match config.create_native_config() {
        Ok(_) => Ok(()),
        Err(error) => Err(invalid(
            &format!("{setting}={}", redact_property(property, value)),
            error.to_string(),
        )),
    }
}

/// Masks values of properties that carry secrets.
fn redact_property(name: &str, value: &str) -> String {
    const SECRET_WORDS: &[&str] = &["password", "secret", "key.pem", "sasl.oauthbearer.config"];
    if SECRET_WORDS.iter().any(|w| name.contains(w)) {
        "***".into()
    } else {
        value.to_owned()
    }
}

/// Masks the password in `scheme://user:password@host…`.
pub fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        Some((_, host)) => format!("{scheme}://***@{host}"),
        None => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family() -> Family {
        cdc_topics::by_name("cache-invalidation")
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("family missing"))
    }

    fn parse(args: &[&str]) -> Result<WorkerConfig, ConfigError> {
        WorkerConfig::from_args(args)
            .unwrap_or_else(|e| panic!("{e}"))
            .finish(&family())
    }

    #[test]
    fn secrets_never_appear_in_the_printed_config() {
        let config = parse(&[
            "--redis-uri",
            "redis://u:hunter2@redis:6379/0",
            "--mysql-pass",
            "hunter3",
            "--kafka-sasl-password",
            "hunter4",
            "--kafka-config",
            "ssl.key.password=hunter5",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let printed = config.redacted(&family());
        for secret in ["hunter2", "hunter3", "hunter4", "hunter5"] {
            assert!(!printed.contains(secret), "{secret} leaked:\n{printed}");
        }
        assert!(printed.contains("redis://u:***@redis:6379/0"), "{printed}");
        assert!(printed.contains("kafka.sasl.password = ***"), "{printed}");
    }

    #[test]
    fn runtime_owned_properties_are_refused_by_name() {
        let err =
            parse(&["--kafka-config", "enable.auto.offset.store=true"]).expect_err("must refuse");
        assert!(
            err.to_string()
                .starts_with("invalid setting --kafka-config enable.auto.offset.store"),
            "{err}"
        );
    }

    #[test]
    fn kafka_properties_librdkafka_refuses_name_their_setting() {
        let err = parse(&["--kafka-config", "fetch.wait.max.ms=abc"]).expect_err("must refuse");
        assert!(
            err.to_string()
                .starts_with("invalid setting --kafka-config fetch.wait.max.ms=abc: "),
            "{err}"
        );
        let err = parse(&["--kafka-security-protocol", "bogus"]).expect_err("must refuse");
        assert!(
            err.to_string()
                .starts_with("invalid setting KAFKA_SECURITY_PROTOCOL=bogus: "),
            "{err}"
        );
    }

    #[test]
    fn invalid_values_name_the_setting() {
        let err = parse(&["--redis-uri", "localhost:6379"]).expect_err("must refuse");
        assert!(
            err.to_string().starts_with("invalid setting REDIS_URI"),
            "{err}"
        );
        let err = parse(&["--batch-max-messages", "0"]).expect_err("must refuse");
        assert!(err.to_string().contains("BATCH_MAX_MESSAGES"), "{err}");
    }

    #[test]
    fn sizes_parse_with_binary_units_and_name_what_is_wrong() {
        assert_eq!(parse_bytes("32MiB"), Ok(32 << 20));
        assert_eq!(parse_bytes("512k"), Ok(512 << 10));
        assert_eq!(parse_bytes("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("32MB").is_err_and(|e| e.contains("\"mb\"")));
        assert!(parse_bytes("lots").is_err_and(|e| e.contains("32MiB")));
        let err = parse(&["--prefetch-budget", "512KiB"]).expect_err("must refuse");
        assert!(err.to_string().contains("PREFETCH_BUDGET"), "{err}");
    }

    #[test]
    fn group_defaults_to_the_family_and_can_be_overridden() {
        let config = parse(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.group_id(&family()), "cdc-cache-invalidation");
        let config = parse(&["--kafka-group-id", "other"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.group_id(&family()), "other");
        let config = parse(&["--run-mode", "shadow"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.group_id(&family()), "cdc-cache-invalidation.shadow");
    }

    #[test]
    fn uri_redaction_handles_every_userinfo_shape() {
        assert_eq!(redact_uri("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact_uri("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact_uri("redis://token@h:1/0"), "redis://***@h:1/0");
    }
}
