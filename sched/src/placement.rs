//! Placement policy: pure functions over a read-only view of the candidate workers. The
//! mechanism (queue, slots, requeue) lives in `mod.rs` and `dispatch.rs`; this only chooses.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use bramble_wire::WorkerId;

/// Which placement policy the scheduler uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// Earliest expected finish, from each worker's current effective speed (measured clock,
    /// throttle bits, temperature trend, observed task times).
    #[default]
    Thermal,
    /// ipyparallel's default: the worker with the fewest outstanding tasks per slot.
    LeastLoad,
    /// Strict rotation over the workers that have a free slot.
    RoundRobin,
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "thermal" => Ok(Self::Thermal),
            "leastload" => Ok(Self::LeastLoad),
            "roundrobin" => Ok(Self::RoundRobin),
            other => Err(format!(
                "unknown policy {other:?} (choose thermal, leastload or roundrobin)"
            )),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Thermal => "thermal",
            Self::LeastLoad => "leastload",
            Self::RoundRobin => "roundrobin",
        })
    }
}

/// What the slot-count policies look at for one candidate. Every candidate has a free slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) id: WorkerId,
    pub(crate) running: u32,
    pub(crate) slots: u32,
}

/// Picks a worker for the next task, or `None` if there are no candidates. `last` is the
/// worker the previous placement chose (round-robin continues after it). Ties go to the
/// lowest id, so placement is deterministic. (`Thermal` uses [`earliest_finish`].)
pub(crate) fn place(
    policy: Policy,
    candidates: &[Candidate],
    last: Option<WorkerId>,
) -> Option<WorkerId> {
    match policy {
        Policy::LeastLoad | Policy::Thermal => candidates
            .iter()
            .min_by_key(|c| {
                (
                    u64::from(c.running) * 1_000_000 / u64::from(c.slots.max(1)),
                    c.id,
                )
            })
            .map(|c| c.id),
        Policy::RoundRobin => {
            let after = candidates
                .iter()
                .filter(|c| last.is_none_or(|l| c.id > l))
                .map(|c| c.id);
            after
                .min()
                .or_else(|| candidates.iter().map(|c| c.id).min())
        }
    }
}

/// A worker as the thermal policy sees it: when its earliest slot frees up (projected) and
/// how long the task would take there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Projection {
    pub(crate) id: WorkerId,
    pub(crate) free_at: Instant,
    pub(crate) expected: Duration,
}

/// The worker that would finish the task first (ties: lower id), and when.
pub(crate) fn earliest_finish(options: &[Projection]) -> Option<(WorkerId, Instant)> {
    options
        .iter()
        .map(|p| (p.free_at + p.expected, p.id))
        .min()
        .map(|(finish, id)| (id, finish))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u32, running: u32, slots: u32) -> Candidate {
        Candidate {
            id: WorkerId(id),
            running,
            slots,
        }
    }

    #[test]
    fn leastload_prefers_emptier_then_lower_id() {
        let cands = [c(0, 2, 4), c(1, 1, 4), c(2, 1, 4)];
        assert_eq!(place(Policy::LeastLoad, &cands, None), Some(WorkerId(1)));
        // Per-slot load: 1 of 1 is fuller than 1 of 4.
        let cands = [c(0, 1, 1), c(5, 1, 4)];
        assert_eq!(place(Policy::LeastLoad, &cands, None), Some(WorkerId(5)));
    }

    #[test]
    fn roundrobin_rotates_and_wraps() {
        let cands = [c(0, 0, 1), c(2, 0, 1), c(3, 0, 1)];
        assert_eq!(place(Policy::RoundRobin, &cands, None), Some(WorkerId(0)));
        assert_eq!(
            place(Policy::RoundRobin, &cands, Some(WorkerId(0))),
            Some(WorkerId(2))
        );
        assert_eq!(
            place(Policy::RoundRobin, &cands, Some(WorkerId(3))),
            Some(WorkerId(0))
        );
        assert_eq!(place(Policy::RoundRobin, &[], Some(WorkerId(3))), None);
    }

    #[test]
    fn earliest_finish_waits_for_a_fast_busy_worker() {
        let now = crate::test_clock::epoch();
        let ms = Duration::from_millis;
        let slow_idle = Projection {
            id: WorkerId(1),
            free_at: now,
            expected: ms(60),
        };
        let fast_busy = Projection {
            id: WorkerId(0),
            free_at: now + ms(10),
            expected: ms(20),
        };
        assert_eq!(
            earliest_finish(&[slow_idle, fast_busy]),
            Some((WorkerId(0), now + ms(30)))
        );
        let fast_long_busy = Projection {
            free_at: now + ms(50),
            ..fast_busy
        };
        assert_eq!(
            earliest_finish(&[slow_idle, fast_long_busy]),
            Some((WorkerId(1), now + ms(60)))
        );
    }

    #[test]
    fn policy_names_parse() {
        assert_eq!("roundrobin".parse::<Policy>(), Ok(Policy::RoundRobin));
        assert_eq!("thermal".parse::<Policy>(), Ok(Policy::Thermal));
        assert!("fastest".parse::<Policy>().is_err());
    }
}
