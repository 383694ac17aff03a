//! The coordinator server: [`start`] opens the database, binds, serves and sweeps until cancelled.
//! Nothing lives in the instance but counters: several instances behind a load balancer share one Postgres.

pub mod accounting;
pub mod clock;
pub mod http;
pub mod metrics;
pub mod service;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use clock::Clock;
pub use service::Service;
pub use store::{Backend, OpenError, Store, StoreOptions};

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8090";
/// Default database: a file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://coordinator.db";
/// Default heartbeat interval told to nodes.
pub const DEFAULT_HEARTBEAT_INTERVAL_SECS: u64 = 30;

/// How to run a coordinator.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks one).
    pub listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://...`.
    pub database_url: String,
    /// Bearer token for operator endpoints; `None` switches them off.
    pub operator_token: Option<String>,
    /// Heartbeat interval told to nodes; a node is offline after 3 of them without a heartbeat.
    pub heartbeat_interval_secs: u64,
    /// Postgres pool size per instance.
    pub postgres_connections: u32,
    /// Where now comes from (tests drive it by hand).
    pub clock: Clock,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            database_url: DEFAULT_DATABASE_URL.into(),
            operator_token: None,
            heartbeat_interval_secs: DEFAULT_HEARTBEAT_INTERVAL_SECS,
            postgres_connections: 16,
            clock: Clock::System,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Database(#[from] OpenError),
    /// The listen address is taken or not ours.
    #[error("cannot listen on {addr}: {source} (choose another with --listen)")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A running coordinator.
#[derive(Debug)]
pub struct RunningServer {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    /// Its logic (tests call `sweep` and read metrics through it).
    pub service: Arc<Service>,
    server: JoinHandle<()>,
    sweeper: JoinHandle<()>,
}

impl RunningServer {
    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Waits until both tasks ended (after cancellation).
    pub async fn wait(self) {
        let _ = self.server.await;
        let _ = self.sweeper.await;
    }
}

/// Opens the database, binds `config.listen` and serves until `cancel`.
pub async fn start(
    config: ServerConfig,
    cancel: CancellationToken,
) -> Result<RunningServer, StartError> {
    let store = Store::open(&StoreOptions {
        url: config.database_url.clone(),
        postgres_connections: config.postgres_connections,
    })
    .await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    let interval = config.heartbeat_interval_secs.max(1);
    let service = Arc::new(Service {
        store,
        clock: config.clock,
        metrics: Default::default(),
        heartbeat_interval_secs: interval,
        operator_token: config.operator_token.filter(|t| !t.is_empty()),
    });
    info!(
        %local_addr,
        database = %store::redact(&config.database_url),
        operator_endpoints = service.operator_token.is_some(),
        "coordinator listening"
    );
    let routes = http::routes(service.clone());
    let shutdown = cancel.clone();
    let server = tokio::spawn(async move {
        warp::serve(routes)
            .incoming(listener)
            .graceful(async move { shutdown.cancelled().await })
            .run()
            .await;
    });
    let sweeper = tokio::spawn(sweep_loop(
        service.clone(),
        Duration::from_secs(interval.min(10)),
        cancel,
    ));
    Ok(RunningServer {
        local_addr,
        service,
        server,
        sweeper,
    })
}

async fn sweep_loop(service: Arc<Service>, every: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = service.sweep().await {
                    warn!(error = %e.message, "sweep failed; next try in {every:?}");
                }
            }
        }
    }
}
