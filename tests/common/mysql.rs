//! MariaDB for the end-to-end tests: a fresh database per test, made from Bangumi's DDL in
//! `fixtures/generator/schema.sql` ([`TABLES`]) and `tests/common/written_tables.sql` (tables
//! workers write but nothing subscribes to: `chii_notify`, `chii_notify_field`), plus the
//! fleet's migrations (what `timeline migrate` / `notify migrate` apply before a deployment's
//! workers start), on the server `make up`
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
    options_at(env("MYSQL_PORT", "3306").parse()?)
}

fn options_at(port: u16) -> anyhow::Result<MySqlConnectOptions> {
    let options = MySqlConnectOptions::new()
        .host(&env("MYSQL_HOST", "127.0.0.1"))
        .port(port)
        .username(&env("MYSQL_USER", "root"))
        .charset("utf8mb4");
    Ok(match env("MYSQL_PASS", "") {
        pass if pass.is_empty() => options,
        pass => options.password(&pass),
    })
}

/// The tables of `schema.sql` a test database gets.
pub const TABLES: &[&str] = &[
    "chii_timeline",
    "chii_friends",
    "chii_members",
    "chii_memberfields",
    "chii_subjects",
    "chii_subject_fields",
    "chii_subject_revisions",
    "chii_characters",
    "chii_persons",
];

/// A database of one test.
pub struct TestDatabase {
    /// Its name (for `--mysql-db`).
    pub name: String,
    /// A pool on it.
    pub pool: MySqlPool,
}

impl TestDatabase {
    /// Creates `it_<random>` with Bangumi's [`TABLES`] and the timeline writer's migrations.
    pub async fn create() -> anyhow::Result<Self> {
        Self::create_with(options()?).await?.migrated().await
    }

    /// Creates `it_<random>` with Bangumi's [`TABLES`] only: a database `timeline migrate`
    /// has not run on yet.
    pub async fn create_unmigrated() -> anyhow::Result<Self> {
        Self::create_with(options()?).await
    }

    /// Creates `it_<random>` with Bangumi's [`TABLES`] and the timeline writer's migrations on
    /// a [`PrivateMariaDb`].
    pub async fn create_on(server: &PrivateMariaDb) -> anyhow::Result<Self> {
        Self::create_with(
            MySqlConnectOptions::new()
                .host("127.0.0.1")
                .port(server.port)
                .username("root")
                .charset("utf8mb4"),
        )
        .await?
        .migrated()
        .await
    }

    /// This database after the timeline writer's migrations (as `timeline migrate` runs them).
    pub async fn migrated(self) -> anyhow::Result<Self> {
        cdc_runtime::applied::migrate(&self.pool)
            .await
            .with_context(|| format!("migrating {} (timeline migrate)", self.name))?;
        Ok(self)
    }

    async fn create_with(options: MySqlConnectOptions) -> anyhow::Result<Self> {
        let name = unique("it").replace('-', "_");
        let server = MySqlPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options.clone())
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
            .connect_with(options.database(&name))
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
        // Only the tables the workers read and write (some others use DDL sqlx's session rejects).
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
        run_ddl(
            &pool,
            "written_tables.sql",
            include_str!("written_tables.sql"),
        )
        .await?;
        Ok(Self { name, pool })
    }

    /// This database with the tables only the scheduler's jobs touch
    /// (`tests/common/scheduled_tables.sql`: subject interests and posts, OAuth tokens).
    pub async fn with_scheduled_tables(self) -> anyhow::Result<Self> {
        run_ddl(
            &self.pool,
            "scheduled_tables.sql",
            include_str!("scheduled_tables.sql"),
        )
        .await?;
        Ok(self)
    }

    /// Worker arguments pointing at this database.
    pub fn worker_args(&self) -> Vec<String> {
        vec!["--mysql-db".into(), self.name.clone()]
    }

    /// The rows of every table a worker may write, for full-state comparison: `chii_friends`,
    /// `chii_subject_fields`, `chii_timeline` without its auto-increment id (two runs may interleave partitions differently), and how
    /// many writer messages were recorded as applied (their coordinates differ between runs).
    pub async fn dump(&self) -> anyhow::Result<std::collections::BTreeMap<String, Vec<String>>> {
        let mut tables = std::collections::BTreeMap::new();
        tables.insert(
            "chii_timeline".to_owned(),
            crate::state::dump_table(&self.pool, "chii_timeline", &["tml_id"]).await?,
        );
        for table in ["chii_friends", "chii_subject_fields"] {
            tables.insert(
                table.to_owned(),
                crate::state::dump_table(&self.pool, table, &[]).await?,
            );
        }
        let applied: Option<i64> = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.TABLES t \
             WHERE t.TABLE_SCHEMA = DATABASE() AND t.TABLE_NAME = 'cdc_applied_messages'",
        )
        .fetch_optional(&self.pool)
        .await?;
        if applied.unwrap_or(0) > 0 {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cdc_applied_messages")
                .fetch_one(&self.pool)
                .await?;
            tables.insert(
                "cdc_applied_messages".to_owned(),
                vec![format!("count={count}")],
            );
        }
        Ok(tables)
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

    /// Inserts `subjects` into `chii_subjects`, each with a `chii_subject_fields` row whose date
    /// is unset (year 0, month 0, `0000-00-00`).
    pub async fn add_subjects(&self, subjects: &[crate::subjects::Subject]) -> anyhow::Result<()> {
        for s in subjects {
            sqlx::query(
                "INSERT INTO chii_subjects (subject_id, subject_type_id, subject_name, subject_name_cn, subject_uid, \
                 subject_creator, subject_image, subject_platform, field_infobox, field_meta_tags, field_summary, \
                 field_5, subject_idx_cn, subject_airtime, subject_nsfw) \
                 VALUES (?, ?, '', '', '', 0, '', ?, ?, '', '', '', '', 0, 0)",
            )
            .bind(s.id)
            .bind(s.type_id)
            .bind(s.platform)
            .bind(&s.infobox)
            .execute(&self.pool)
            .await
            .with_context(|| format!("inserting subject {}", s.id))?;
        }
        self.add_subject_fields(subjects.iter().map(|s| s.id)).await
    }

    /// [`TestDatabase::add_subjects`] in multi-row inserts (hundreds of rows per statement), for
    /// the bench's tens of thousands of subjects.
    pub async fn add_subjects_in_bulk(
        &self,
        subjects: &[crate::subjects::Subject],
    ) -> anyhow::Result<()> {
        for chunk in subjects.chunks(500) {
            let values = vec!["(?, ?, '', '', '', 0, '', ?, ?, '', '', '', '', 0, 0)"; chunk.len()]
                .join(",");
            let sql = format!(
                "INSERT INTO chii_subjects (subject_id, subject_type_id, subject_name, subject_name_cn, subject_uid, \
                 subject_creator, subject_image, subject_platform, field_infobox, field_meta_tags, field_summary, \
                 field_5, subject_idx_cn, subject_airtime, subject_nsfw) VALUES {values}"
            );
            let mut q = sqlx::query(&sql);
            for s in chunk {
                q = q
                    .bind(s.id)
                    .bind(s.type_id)
                    .bind(s.platform)
                    .bind(&s.infobox);
            }
            q.execute(&self.pool)
                .await
                .with_context(|| format!("inserting subjects from {}", chunk[0].id))?;
        }
        for chunk in subjects.chunks(2_000) {
            let values =
                vec!["(?, 0, '', 0, 0, 0, 0, 0, 0, 0, 0, 0, '0000-00-00')"; chunk.len()].join(",");
            let sql = format!(
                "INSERT INTO chii_subject_fields (field_sid, field_tid, field_tags, field_rate_1, field_rate_3, \
                 field_rate_5, field_rate_7, field_rate_10, field_airtime, field_year, field_mon, field_week_day, \
                 field_date) VALUES {values}"
            );
            let mut q = sqlx::query(&sql);
            for s in chunk {
                q = q.bind(s.id);
            }
            q.execute(&self.pool)
                .await
                .with_context(|| format!("inserting chii_subject_fields from {}", chunk[0].id))?;
        }
        Ok(())
    }

    /// Inserts a `chii_subject_fields` row with an unset date for each of `ids`.
    pub async fn add_subject_fields(
        &self,
        ids: impl IntoIterator<Item = u32>,
    ) -> anyhow::Result<()> {
        for id in ids {
            sqlx::query(
                "INSERT INTO chii_subject_fields (field_sid, field_tid, field_tags, field_rate_1, field_rate_3, \
                 field_rate_5, field_rate_7, field_rate_10, field_airtime, field_year, field_mon, field_week_day, \
                 field_date) VALUES (?, 0, '', 0, 0, 0, 0, 0, 0, 0, 0, 0, '0000-00-00')",
            )
            .bind(id)
            .execute(&self.pool)
            .await
            .with_context(|| format!("inserting chii_subject_fields {id}"))?;
        }
        Ok(())
    }

    /// Every `chii_subject_fields` row's date: `field_sid → (field_year, field_mon, field_date)`.
    pub async fn subject_dates(
        &self,
    ) -> anyhow::Result<std::collections::BTreeMap<u32, crate::subjects::Date>> {
        let rows: Vec<(u32, u32, i32, String)> = sqlx::query_as(
            "SELECT field_sid, CAST(field_year AS UNSIGNED), CAST(field_mon AS SIGNED), \
             CAST(field_date AS CHAR) FROM chii_subject_fields",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, year, month, date)| (id, crate::subjects::Date { year, month, date }))
            .collect())
    }

    /// Fills `tables` with the rows the fixtures leave in them: each key's last row image
    /// (none if its last change deletes it), the columns this database's table has (the
    /// fixtures' `fx_*` test columns are left out). A Debezium `DATE` (days since 1970-01-01,
    /// 0 for the zero date) becomes its date, a `YEAR` outside 1901–2155 the zero year.
    pub async fn add_rows_as_the_fixtures_leave_them(&self, tables: &[&str]) -> anyhow::Result<()> {
        for table in tables {
            let types: std::collections::BTreeMap<String, String> = sqlx::query_as(
                "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            )
            .bind(table)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .collect();
            for row in crate::fixtures::rows_as_left(table)? {
                let columns: Vec<(&String, &serde_json::Value)> =
                    row.iter().filter(|(c, _)| types.contains_key(*c)).collect();
                let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
                let sql = format!(
                    "INSERT INTO {table} ({}) VALUES ({})",
                    names.join(", "),
                    vec!["?"; names.len()].join(", ")
                );
                let mut query = sqlx::query(&sql);
                for (column, value) in &columns {
                    query = match (types[*column].as_str(), value) {
                        ("date", serde_json::Value::Number(days)) => {
                            query.bind(date_of_days(days.as_i64().unwrap_or(0)))
                        }
                        // Debezium streams the zero YEAR as 1900 (2000 in snapshots).
                        ("year", serde_json::Value::Number(year)) => query.bind(
                            year.as_i64()
                                .filter(|y| (1901..=2155).contains(y))
                                .unwrap_or(0),
                        ),
                        (_, serde_json::Value::Number(n)) if n.is_i64() => query.bind(n.as_i64()),
                        (_, serde_json::Value::Number(n)) => query.bind(n.as_f64()),
                        (_, serde_json::Value::String(text)) => query.bind(text.clone()),
                        (_, other) => query.bind(other.to_string()),
                    };
                }
                query
                    .execute(&self.pool)
                    .await
                    .with_context(|| format!("inserting a fixture row into {table}"))?;
            }
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

/// A MariaDB server of the test's own (its own datadir, port and socket), so a test can stop and
/// restart it without touching the machine's server. Killed when dropped.
pub struct PrivateMariaDb {
    /// Its port.
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateMariaDb {
    /// Initialises a datadir and starts the server on a free port (a few seconds).
    pub async fn start() -> anyhow::Result<Self> {
        let port = crate::process::free_port()?;
        let dir = std::env::temp_dir().join(format!("cdc-mariadb-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data"))?;
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        std::fs::write(
            dir.join("my.cnf"),
            format!(
                "[mysqld]\nuser = {user}\ndatadir = {data}\nsocket = {dir}/mysqld.sock\n\
                 pid-file = {dir}/mariadbd.pid\nlog-error = {dir}/error.log\nport = {port}\n\
                 bind-address = 127.0.0.1\nskip-name-resolve\nskip-log-bin\n\
                 character-set-server = utf8mb4\ncollation-server = utf8mb4_unicode_ci\n\
                 innodb_buffer_pool_size = 32M\ninnodb_log_file_size = 8M\n\
                 innodb_flush_log_at_trx_commit = 2\nperformance_schema = OFF\n",
                data = dir.join("data").display(),
                dir = dir.display(),
            ),
        )?;
        let install = std::process::Command::new("mariadb-install-db")
            .arg(format!("--defaults-file={}", dir.join("my.cnf").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .output()
            .context("running mariadb-install-db (apt-get install mariadb-server)")?;
        if !install.status.success() {
            anyhow::bail!(
                "mariadb-install-db failed: {}{}",
                String::from_utf8_lossy(&install.stdout),
                String::from_utf8_lossy(&install.stderr)
            );
        }
        let mut server = Self {
            port,
            dir,
            child: None,
        };
        server.restart().await?;
        Ok(server)
    }

    /// Starts it again (after [`PrivateMariaDb::stop`]) with the data it had, and waits until
    /// it accepts connections.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let mariadbd = ["/usr/sbin/mariadbd", "/usr/sbin/mysqld"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("mariadbd");
        let child = std::process::Command::new(mariadbd)
            .arg(format!(
                "--defaults-file={}",
                self.dir.join("my.cnf").display()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting mariadbd")?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ping = MySqlPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(1))
                .connect_with(
                    MySqlConnectOptions::new()
                        .host("127.0.0.1")
                        .port(self.port)
                        .username("root"),
                )
                .await;
            if let Ok(pool) = ping {
                pool.close().await;
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
                anyhow::bail!("private MariaDB did not start on {}:\n{log}", self.port);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops it the hard way (SIGKILL: connections drop as in a crash); data stays on disk.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The date of a Debezium `io.debezium.time.Date` (days since 1970-01-01); 0 is the zero date
/// `0000-00-00` (MySQL's zero date comes out as 0).
fn date_of_days(days: i64) -> String {
    if days == 0 {
        return "0000-00-00".into();
    }
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Runs the `;`-separated statements of `ddl` (the file `name`), comment lines left out.
async fn run_ddl(pool: &MySqlPool, name: &str, ddl: &str) -> anyhow::Result<()> {
    for statement in ddl.split(";\n").map(str::trim) {
        let statement: String = statement
            .lines()
            .filter(|l| !l.starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        if statement.trim().is_empty() {
            continue;
        }
        sqlx::raw_sql(&statement)
            .execute(pool)
            .await
            .with_context(|| format!("{name}: {}", statement.lines().next().unwrap_or("")))?;
    }
    Ok(())
}
