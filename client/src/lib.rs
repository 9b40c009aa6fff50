//! What every bramble client shares (the CLI, the Python package, the dashboard): finding and
//! loading a client bundle ([`locate`]), a connection that redials a restarted host
//! ([`Client`]), typed requests, and job streams that yield typed results in input or
//! completion order and resume after a lost connection from a cursor, without downloading
//! anything twice ([`JobStream`], whose ordering and deduplication is the sans-IO [`Follow`]).
//!
//! No SQLite, no scheduler, no argument parsing and no printing: those belong to the host and
//! to each client's own front end.

mod client;
mod error;
mod follow;
pub mod locate;
mod stream;

pub use bramble_wire as wire;
pub use client::Client;
pub use error::ClientError;
pub use follow::{Follow, ItemResult, JobEnd, JobEvent, Order};
pub use stream::JobStream;
