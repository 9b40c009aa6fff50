//! The scheduler's simulation tests (tier 2 of STYLE.md): a virtual cluster drives
//! `bramble-sched` and restarts its host from the real job store, in memory.

pub(crate) mod harness;
mod scenarios;
mod thermal;
mod worker;
