//! The media protocol's logic as state machines with no I/O and no clock of their own (time is an
//! argument): [`Upstream`] (a subscription, subscriber side), [`Downstream`] (a subscription, provider side,
//! with admission and redirects), [`Fetcher`] (which providers to try, and when) and [`Round`] (how many
//! of them to ask at once). The service's tasks (`crate::service`) feed them bytes and the clock; the
//! simulator (`crate::sim`) drives the same code over a simulated network with virtual time.

pub mod downstream;
pub mod fetcher;
pub mod round;
pub mod upstream;

pub use downstream::{Downstream, ServeError};
pub use fetcher::{Fetcher, Friends, MIN_ORIGIN_PREFIX, Next, Stop, play_name};
pub use round::Round;
pub use upstream::{Event, Loss, Outcome, Refusal, Request, Upstream};
