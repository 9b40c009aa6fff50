//! bramble's host: the QUIC server and the driver that owns the scheduler (`net`), the SQLite
//! job store (`store`), and profiles (`profile`); plus, in `main`, the `bramble` CLI, which
//! parses arguments and prints what `bramble-client` brings back.
//!
//! The decisions live in `bramble-sched`; its simulation tests (`sim`) run here because they
//! restart their host from a real (in-memory) job store.

/// Tests count allocations: every decoder's fuzz run checks what it allocates.
#[cfg(test)]
#[global_allocator]
static COUNTING: bramble_wire::fuzz::Counting = bramble_wire::fuzz::Counting;

pub mod blobs;
pub mod enrolled;
pub mod http;
pub mod net;
pub mod profile;
pub mod store;

#[cfg(test)]
mod sim;
