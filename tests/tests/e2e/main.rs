//! End-to-end tests: real `bramble` and `bramble-worker` processes over loopback QUIC with a
//! fresh CA per test, all in one test binary (STYLE.md tier 4).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

/// An aarch64 worker (cross-built, under qemu-user) joins an x86 host.
mod aarch64;
/// The CLI's rough edges: --version, help texts, a host that is down, status into a file.
mod cli;
/// The live dashboard in headless Chromium, and Prometheus metrics.
mod dashboard;
/// Installing on a Pi: install-worker.sh into a root directory, the systemd unit.
mod deploy;
/// Draining a worker: running tasks finish, no new work, kept across restarts.
mod drain;
/// One bundle per Pi: enrolling again, a duplicate connection, ids given at enrollment.
mod enroll;
/// Hostile conditions: a full disk, greedy and confused peers, huge jobs.
mod hostile;
/// Async jobs, scatter, cancel, co-processes, worker config.
mod jobs;
/// Nothing lost: host and worker crashes, stops, retries, revocation.
mod lost;
/// GNU parallel's idioms: placeholders, several sources, --tag, --halt; forget and prune.
mod parallel;
/// Raw QUIC peers for tests that play a worker or client by hand.
mod peer;
/// Refusals: bad bundles, wrong roles, garbage frames, missing certificates.
mod security;
/// The first steps of the ipyparallel tutorial, through the CLI.
mod seed;
/// Files that travel with the work: --stage, --fetch, the workers' cache.
mod stage;
/// Simulated Pis: thermal model, throttling in status.
mod thermal;
