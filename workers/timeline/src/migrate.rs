//! The timeline writer's own tables, as explicit migrations: `workers/timeline/migrations/`,
//! embedded in the binary and applied by `timeline migrate` (the Helm chart's
//! pre-install/pre-upgrade hook), never by the worker at run time.
//!
//! sqlx records applied migrations in `_sqlx_migrations` (in the same database) and holds a
//! named lock (`GET_LOCK`) while it migrates, so two concurrent runs are safe; an applied
//! migration whose file changed is refused (checksum), never run again.
//!
//! Not here: Bangumi's own tables (`chii_*`), which the writer only reads and writes.
//!
//! # Layout
//! - [`MIGRATOR`]: the migrations.
//! - [`run`]: applies the pending ones and reports what it did.

use sqlx::MySqlPool;
use sqlx::migrate::{MigrateError, Migrator};

/// The migrations of `workers/timeline/migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Applies the pending migrations on `pool`'s database; returns the descriptions of those it
/// applied (empty: the schema was up to date).
pub async fn run(pool: &MySqlPool) -> Result<Vec<String>, MigrateError> {
    let applied_before = applied_versions(pool).await?;
    MIGRATOR.run(pool).await?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| !applied_before.contains(&m.version))
        .map(|m| format!("{:04} {}", m.version, m.description))
        .collect())
}

/// The versions `_sqlx_migrations` lists as applied (none if the table does not exist yet).
async fn applied_versions(pool: &MySqlPool) -> Result<Vec<i64>, MigrateError> {
    let exists: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '_sqlx_migrations'",
    )
    .fetch_one(pool)
    .await?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?,
    )
}
