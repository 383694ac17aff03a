//! The media protocol's logic as state machines with no I/O and no clock of their own (time is an
//! argument): [`Upstream`] (a subscription, subscriber side), [`Downstream`] (a subscription, provider side,
//! with admission and redirects) and [`Fetcher`] (which providers to try, and when). The service's tasks
//! (`crate::service`) feed them bytes and the clock; the simulator (`crate::sim`) drives the same code over a
//! simulated network with virtual time.

pub mod downstream;
pub mod fetcher;
pub mod upstream;

pub use downstream::{Downstream, ServeError};
pub use fetcher::{Fetcher, Friends, MIN_ORIGIN_PREFIX, Next, Stop, play_name};
pub use upstream::{Event, Loss, Outcome, Refusal, Request, Upstream};
