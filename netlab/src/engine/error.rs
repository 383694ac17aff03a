//! Errors of the lab engine. Each says what went wrong and, where a user can act, what to do next.

use std::io;

use super::addr::PoolExhausted;
use super::link::InvalidConditions;

/// A command the lab ran (`ip`, `nft`, `sysctl`, an agent) failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{command}` failed ({status}): {stderr}")]
pub struct CommandFailed {
    /// The command line, for copying into a shell.
    pub command: String,
    /// How it ended.
    pub status: String,
    /// What it printed on standard error (trimmed).
    pub stderr: String,
}

/// Why a lab operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// Network namespaces and nftables need root.
    #[error("netlab needs root (network namespaces, veth, nft): run it with sudo")]
    NotRoot,
    /// A tool the lab drives is not installed.
    #[error(
        "`{tool}` is not installed or not on PATH: install {package} (e.g. `apt-get install {package}`)"
    )]
    MissingTool {
        /// The program that was not found.
        tool: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// A command failed.
    #[error(transparent)]
    Command(#[from] CommandFailed),
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the lab was doing.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The topology is larger than the address plan.
    #[error(transparent)]
    Exhausted(#[from] PoolExhausted),
    /// Link conditions out of range.
    #[error(transparent)]
    Conditions(#[from] InvalidConditions),
    /// The lab is being torn down (Ctrl-C or shutdown) and accepts no more work.
    #[error("the lab is shutting down")]
    ShuttingDown,
    /// A probe or helper process inside the lab misbehaved.
    #[error("{what}: {detail}")]
    Agent {
        /// Which agent.
        what: String,
        /// What went wrong.
        detail: String,
    },
    /// A name given by the caller is not usable.
    #[error("{0}")]
    InvalidName(String),
}

impl LabError {
    /// Wraps an I/O error with what the lab was doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> LabError {
        LabError::Io {
            context: context.into(),
            source,
        }
    }

    /// An agent error.
    pub fn agent(what: impl Into<String>, detail: impl Into<String>) -> LabError {
        LabError::Agent {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

/// Result of lab operations.
pub type LabResult<T> = Result<T, LabError>;
