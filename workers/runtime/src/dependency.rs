//! The services a worker depends on (Redis, MySQL, Meilisearch, S3, the brokers, the schema registry), named by
//! kind and address — never by credentials — so that a transient failure's log line, its
//! `/readyz` reason and its metrics say which one to look at.
//!
//! A family names the dependency of a failure with [`crate::HandlerError::at`]; the runtime
//! names its own (the registry while decoding, the brokers while dead-lettering).

use std::fmt;

/// One service a worker talks to: its kind (`redis`, `mysql`, `kafka`, `schema-registry`) and
/// its address without credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    kind: &'static str,
    address: String,
}

impl Dependency {
    /// The Redis of `uri` (`redis://[user:password@]host:port/db`).
    pub fn redis(uri: &str) -> Self {
        Self::new("redis", address_of(uri))
    }

    /// The MySQL/MariaDB server at `host:port`.
    pub fn mysql(host: &str, port: u16) -> Self {
        Self::new("mysql", format!("{host}:{port}"))
    }

    /// The Kafka brokers `brokers` (bootstrap servers, comma separated).
    pub fn kafka(brokers: &str) -> Self {
        Self::new(
            "kafka",
            brokers
                .split(',')
                .map(address_of)
                .collect::<Vec<_>>()
                .join(","),
        )
    }

    /// The Meilisearch server at `url`.
    pub fn meilisearch(url: &str) -> Self {
        Self::new("meilisearch", address_of(url))
    }

    /// The S3-compatible object store at `url` (`S3_ENDPOINT`).
    pub fn s3(url: &str) -> Self {
        Self::new("s3", address_of(url))
    }

    /// The schema registry at `url`.
    pub fn schema_registry(url: &str) -> Self {
        Self::new("schema-registry", address_of(url))
    }

    fn new(kind: &'static str, address: String) -> Self {
        Self { kind, address }
    }

    /// `redis`, `mysql`, `meilisearch`, `s3`, `kafka` or `schema-registry`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Host and port (or socket path), without user or password.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.address)
    }
}

/// Where `uri` points: its host and port (or a unix socket's path), without scheme, user,
/// password, path or query (a query may carry a password too).
pub fn address_of(uri: &str) -> String {
    let uri = uri.trim();
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if scheme == "unix" || host.is_empty() {
        return rest.split(['?', '#']).next().unwrap_or_default().to_owned();
    }
    host.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_carry_no_credentials() {
        assert_eq!(
            Dependency::redis("redis://u:hunter2@redis:6379/0").to_string(),
            "redis redis:6379"
        );
        assert_eq!(address_of("rediss://:hunter2@h:1/0?password=x"), "h:1");
        assert_eq!(address_of("redis://h:1"), "h:1");
        assert_eq!(address_of("unix:///run/redis.sock?db=1"), "/run/redis.sock");
        assert_eq!(
            Dependency::kafka("a:9092, b:9092").address(),
            "a:9092,b:9092"
        );
        assert_eq!(
            Dependency::schema_registry("https://u:p@registry:8081/").address(),
            "registry:8081"
        );
    }
}
