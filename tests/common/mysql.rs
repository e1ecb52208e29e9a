//! MariaDB for the end-to-end tests: a fresh database per test, made from Bangumi's DDL in
//! `fixtures/generator/schema.sql` ([`TABLES`]), on the server `make up`
//! starts (`MYSQL_HOST`/`MYSQL_PORT`/`MYSQL_USER`/`MYSQL_PASS`, default root@127.0.0.1:3306).
//!
//! Databases are named `it_<random>` and dropped by [`TestDatabase::drop_now`]; a test that
//! fails leaves its database behind for inspection.

use std::time::Duration;

use anyhow::Context;
use sqlx::MySqlPool;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

use crate::unique;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

fn options() -> anyhow::Result<MySqlConnectOptions> {
    let options = MySqlConnectOptions::new()
        .host(&env("MYSQL_HOST", "127.0.0.1"))
        .port(env("MYSQL_PORT", "3306").parse()?)
        .username(&env("MYSQL_USER", "root"))
        .charset("utf8mb4");
    Ok(match env("MYSQL_PASS", "") {
        pass if pass.is_empty() => options,
        pass => options.password(&pass),
    })
}

/// The tables of `schema.sql` a test database gets.
pub const TABLES: &[&str] = &["chii_timeline", "chii_friends", "chii_members"];

/// A database of one test.
pub struct TestDatabase {
    /// Its name (for `--mysql-db`).
    pub name: String,
    /// A pool on it.
    pub pool: MySqlPool,
}

impl TestDatabase {
    /// Creates `it_<random>` with Bangumi's [`TABLES`].
    pub async fn create() -> anyhow::Result<Self> {
        let name = unique("it").replace('-', "_");
        let server = MySqlPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options()?)
            .await
            .context(
                "no MariaDB on MYSQL_HOST:MYSQL_PORT (default 127.0.0.1:3306); run `make up`",
            )?;
        sqlx::query(&format!(
            "CREATE DATABASE {name} DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        ))
        .execute(&server)
        .await?;
        server.close().await;
        let pool = MySqlPoolOptions::new()
            .max_connections(4)
            .connect_with(options()?.database(&name))
            .await?;
        let path = crate::fixtures::dir().join("generator/schema.sql");
        let ddl: String = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .lines()
            .filter(|l| {
                !l.starts_with("CREATE DATABASE") && !l.starts_with("USE ") && !l.starts_with("--")
            })
            .collect::<Vec<_>>()
            .join("\n");
        // Only the tables the timeline needs (some others use DDL sqlx's session rejects).
        let wanted = |s: &&str| {
            TABLES
                .iter()
                .any(|t| s.starts_with(&format!("CREATE TABLE {t} (")))
        };
        for statement in ddl.split(";\n").map(str::trim).filter(wanted) {
            sqlx::raw_sql(statement)
                .execute(&pool)
                .await
                .with_context(|| {
                    format!("schema.sql: {}", statement.lines().next().unwrap_or(""))
                })?;
        }
        Ok(Self { name, pool })
    }

    /// Worker arguments pointing at this database.
    pub fn worker_args(&self) -> Vec<String> {
        vec!["--mysql-db".into(), self.name.clone()]
    }

    /// Inserts `chii_friends` rows `(frd_uid follows frd_fid)`, in order, in multi-row inserts.
    pub async fn add_followers(&self, followed: u64, followers: &[u64]) -> anyhow::Result<()> {
        for chunk in followers.chunks(5000) {
            let values = vec!["(?, ?, 1, 0, '')"; chunk.len()].join(",");
            let sql = format!(
                "INSERT INTO chii_friends (frd_uid, frd_fid, frd_grade, frd_dateline, frd_description) VALUES {values}"
            );
            let mut q = sqlx::query(&sql);
            for uid in chunk {
                q = q.bind(*uid).bind(followed);
            }
            q.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Drops the database.
    pub async fn drop_now(self) -> anyhow::Result<()> {
        sqlx::query(&format!("DROP DATABASE {}", self.name))
            .execute(&self.pool)
            .await?;
        self.pool.close().await;
        Ok(())
    }
}
