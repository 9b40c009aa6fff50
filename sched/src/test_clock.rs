//! The one clock read of this crate, for unit tests: a starting instant (the scheduler takes
//! `now` as an argument everywhere else). `.ci/run` checks that no other file reads a clock.

/// A starting instant for unit tests.
pub(crate) fn epoch() -> std::time::Instant {
    std::time::Instant::now()
}
