//! bramble's QUIC plumbing, written once for the host, the worker and every client: the QUIC
//! configs (TLS from `bramble-certs`, ALPN from `bramble-wire`, one set of transport
//! settings per side), dialing the hosts of a bundle, and reading and writing frames on
//! streams. It decides nothing about what the frames mean.

mod backoff;
mod config;
mod dial;
mod frames;
#[cfg(feature = "logging")]
pub mod logging;
mod socket;

pub use backoff::{Backoff, Eager};
pub use config::{Side, client_config, server_config, transport};
pub use dial::{DialError, connect, is_refusal};
pub use frames::{Budget, FrameReader, ReadError, WriteError, read_one, write_frame};
pub use socket::{SOCKET_BUFFER, bind_udp};
