//! Opening the database: SQLite (default) or Postgres through sqlx's `Any` driver, so every query is written
//! once (`$1` placeholders work on both). Migrations are embedded, one set per backend, and run at start.

use std::borrow::Cow;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, AssertSqlSafe, Executor, SqlSafeStr};

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One file; one connection (SQLite has one writer anyway, and this keeps BUSY errors out).
    Sqlite,
    /// A server several coordinator instances share.
    Postgres,
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL is neither `sqlite:` nor `postgres:`.
    #[error(
        "database URL {0:?} is not supported: use sqlite://PATH or postgres://USER:PASSWORD@HOST/DB"
    )]
    UnsupportedUrl(String),
    /// Connecting failed.
    #[error("cannot open database {url}: {source}")]
    Connect {
        /// The URL (password removed).
        url: String,
        /// sqlx's error.
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("cannot migrate database {url}: {source}")]
    Migrate {
        /// The URL (password removed).
        url: String,
        /// sqlx's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// The connection pool and its backend.
#[derive(Debug, Clone)]
pub struct Store {
    /// Connections.
    pub pool: AnyPool,
    /// Which database.
    pub backend: Backend,
}

/// What [`Store::open`] is given.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `sqlite://PATH` (created when missing) or `postgres://...`.
    pub url: String,
    /// Pool size for Postgres (SQLite always uses one connection).
    pub postgres_connections: u32,
}

impl Store {
    /// Connects and migrates.
    pub async fn open(options: &StoreOptions) -> Result<Store, OpenError> {
        install_default_drivers();
        let url = options.url.trim();
        let shown = redact(url);
        let (backend, url) = if url.starts_with("sqlite:") {
            let url = if url.contains("mode=") {
                url.to_string()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(OpenError::UnsupportedUrl(shown));
        };
        let pool_options = match backend {
            Backend::Sqlite => AnyPoolOptions::new().max_connections(1).after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL: readers never block the writer; NORMAL: no fsync per commit (a crash may
                    // lose the last commits, never corrupt); busy_timeout for a second process.
                    conn.execute(
                        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
                    )
                    .await?;
                    Ok(())
                })
            }),
            Backend::Postgres => {
                AnyPoolOptions::new().max_connections(options.postgres_connections.max(1))
            }
        }
        .acquire_timeout(Duration::from_secs(10));
        let pool = pool_options
            .connect(&url)
            .await
            .map_err(|source| OpenError::Connect {
                url: shown.clone(),
                source,
            })?;
        migrator(backend)
            .run(&pool)
            .await
            .map_err(|source| OpenError::Migrate { url: shown, source })?;
        Ok(Store { pool, backend })
    }

    /// `FOR UPDATE` where the backend has row locks (Postgres); SQLite has one writer and needs none.
    pub fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }
}

fn migrator(backend: Backend) -> Migrator {
    // Each migration is embedded once per backend; applied ones are never edited (sqlx checks them).
    let sql: [(i64, &str, &str); 2] = match backend {
        Backend::Sqlite => [
            (
                1,
                "init",
                include_str!("../../migrations/sqlite/0001_init.sql"),
            ),
            (
                2,
                "listen_addrs",
                include_str!("../../migrations/sqlite/0002_listen_addrs.sql"),
            ),
        ],
        Backend::Postgres => [
            (
                1,
                "init",
                include_str!("../../migrations/postgres/0001_init.sql"),
            ),
            (
                2,
                "listen_addrs",
                include_str!("../../migrations/postgres/0002_listen_addrs.sql"),
            ),
        ],
    };
    Migrator::with_migrations(
        sql.into_iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(name),
                    MigrationType::Simple,
                    AssertSqlSafe(sql).into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
