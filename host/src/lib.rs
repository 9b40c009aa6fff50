//! bramble's host: the scheduler (a sans-IO state machine), the QUIC server that drives it,
//! the client library the CLI (and later the Python package) uses, and profile handling.

pub mod client;
pub mod index_set;
pub mod net;
pub mod profile;
pub mod sched;
pub mod store;
