//! Scenario and randomised simulation tests of the scheduler (tier 2 of STYLE.md).

use std::collections::BTreeSet;
use std::time::Duration;

use bramble_wire::{JobKind, JobState, Outcome, Targets, WorkerId};

use bramble_sched::{Policy, SchedConfig};

use super::harness::{Sim, seeds, spec};

fn cluster(n: usize, slots: u16, item_ms: u64, policy: Policy, seed: u64) -> Sim {
    let mut sim = Sim::new(
        SchedConfig {
            policy,
            ..SchedConfig::default()
        },
        seed,
    );
    for i in 0..n {
        sim.add_worker(slots, item_ms);
        sim.connect(i);
    }
    sim
}

#[test]
fn ids_are_stable_across_reconnects_and_new_names_get_the_next_id() {
    let mut sim = cluster(3, 1, 10, Policy::LeastLoad, 0);
    assert_eq!(sim.sched.ids(), [WorkerId(0), WorkerId(1), WorkerId(2)]);
    sim.disconnect(1);
    assert_eq!(sim.sched.ids(), [WorkerId(0), WorkerId(2)]);
    sim.connect(1);
    assert_eq!(sim.sched.ids(), [WorkerId(0), WorkerId(1), WorkerId(2)]);
    sim.add_worker(1, 10);
    sim.connect(3);
    assert_eq!(sim.sched.status(sim.now)[3].name, "w3");
    // Ids survive a host restart (they come back from the store).
    sim.restart_host();
    for i in [3, 0] {
        sim.connect(i);
    }
    assert_eq!(sim.sched.ids(), [WorkerId(0), WorkerId(3)]);
}

#[test]
fn map_runs_every_item_once_within_slots() {
    for policy in [Policy::LeastLoad, Policy::RoundRobin] {
        let mut sim = cluster(4, 2, 10, policy, 1);
        sim.submit(JobKind::Map, 64, 10, Targets::All);
        sim.run_until_jobs_done(10_000);
        sim.assert_all_results_once();
        // 7 chunks over 8 slots: every worker got work, none more than its slots.
        assert!(
            sim.workers
                .iter()
                .all(|w| (1..=2).contains(&w.peak_running)),
            "{policy}"
        );
    }
}

#[test]
fn apply_runs_once_on_each_target() {
    let mut sim = cluster(4, 1, 10, Policy::LeastLoad, 2);
    let c = sim.submit(JobKind::Apply, 0, 1, Targets::All);
    sim.run_until_jobs_done(1_000);
    sim.assert_all_results_once();
    let workers: Vec<WorkerId> = sim.jobs[&c].items.values().map(|(w, _)| *w).collect();
    assert_eq!(
        workers,
        [WorkerId(0), WorkerId(1), WorkerId(2), WorkerId(3)]
    );
}

#[test]
fn scatter_gives_each_target_one_chunk_in_target_order() {
    let mut sim = cluster(4, 1, 10, Policy::LeastLoad, 3);
    let c = sim.submit(
        JobKind::Scatter,
        64,
        1,
        Targets::Ids(vec![WorkerId(3), WorkerId(1)]),
    );
    sim.run_until_jobs_done(1_000);
    sim.assert_all_results_once();
    let log = &sim.jobs[&c];
    assert_eq!(log.total, Some(2));
    assert_eq!(log.items[&0].0, WorkerId(3));
    assert_eq!(log.items[&1].0, WorkerId(1));
}

#[test]
fn map_respects_ids_and_labels() {
    let mut sim = Sim::new(SchedConfig::default(), 4);
    for i in 0..4 {
        sim.add_worker(1, 10);
        if i == 2 {
            sim.workers[i].labels = vec!["gpu".into()];
        }
        sim.connect(i);
    }
    let targets = Targets::Select {
        ids: vec![WorkerId(0)],
        labels: vec!["gpu".into()],
    };
    let c = sim.submit(JobKind::Map, 20, 1, targets);
    sim.run_until_jobs_done(1_000);
    sim.assert_all_results_once();
    assert!(
        sim.jobs[&c]
            .items
            .values()
            .all(|(w, _)| *w == WorkerId(0) || *w == WorkerId(2))
    );
    let c = sim.submit(
        JobKind::Apply,
        0,
        1,
        Targets::Select {
            ids: vec![],
            labels: vec!["tpu".into()],
        },
    );
    assert_eq!(
        sim.jobs[&c].error.as_deref(),
        Some("no connected worker is named or labelled \"tpu\"")
    );
    // A worker's name targets it like a label.
    let by_name = Targets::Select {
        ids: vec![],
        labels: vec!["w3".into(), "gpu".into()],
    };
    let c = sim.submit(JobKind::Apply, 0, 1, by_name);
    sim.run_until_jobs_done(1_000);
    let on: BTreeSet<WorkerId> = sim.jobs[&c].items.values().map(|(w, _)| *w).collect();
    assert_eq!(on, BTreeSet::from([WorkerId(2), WorkerId(3)]));
}

#[test]
fn bad_jobs_are_refused_with_a_reason() {
    let mut sim = Sim::new(SchedConfig::default(), 5);
    let c = sim.submit(JobKind::Map, 3, 1, Targets::All);
    assert_eq!(sim.jobs[&c].error.as_deref(), Some("no workers connected"));
    sim.add_worker(1, 10);
    sim.connect(0);
    let c = sim.submit(JobKind::Apply, 0, 1, Targets::Ids(vec![WorkerId(7)]));
    assert_eq!(
        sim.jobs[&c].error.as_deref(),
        Some("worker 7 is not connected")
    );
    let c = sim.submit(JobKind::Map, 3, 0, Targets::All);
    assert!(sim.jobs[&c].error.as_deref().unwrap().contains("chunksize"));
}

#[test]
fn empty_map_finishes_at_once() {
    let mut sim = cluster(1, 1, 10, Policy::LeastLoad, 6);
    let c = sim.submit(JobKind::Map, 0, 1, Targets::All);
    assert_eq!(sim.jobs[&c].ended, Some(JobState::Done));
    assert_eq!(sim.jobs[&c].total, Some(0));
}

#[test]
fn disconnected_worker_tasks_are_requeued_and_late_results_dropped() {
    let mut sim = cluster(3, 1, 1000, Policy::LeastLoad, 7);
    sim.submit(JobKind::Map, 6, 1, Targets::All);
    sim.run_for(Duration::from_millis(500));
    sim.disconnect(0); // its task keeps running and lands in its outbox
    sim.run_for(Duration::from_millis(700));
    sim.connect(0); // delivers the outbox: the requeued copy may already be running elsewhere
    sim.run_until_jobs_done(1_000);
    sim.assert_all_results_once();
}

#[test]
fn silent_worker_is_lost_after_the_timeout_and_its_results_count_once() {
    let mut sim = cluster(2, 1, 2000, Policy::LeastLoad, 8);
    sim.submit(JobKind::Map, 4, 1, Targets::All);
    sim.run_for(Duration::from_millis(100));
    sim.workers[1].frozen = true; // SIGSTOP
    sim.run_for(SchedConfig::default().worker_timeout + Duration::from_secs(1));
    assert_eq!(
        sim.sched.ids(),
        [WorkerId(0)],
        "frozen worker not declared lost"
    );
    assert!(
        sim.workers[1].session.is_none(),
        "lost worker not disconnected"
    );
    sim.workers[1].frozen = false; // SIGCONT: finishes its task, reconnects, delivers it
    sim.run_for(Duration::from_secs(3));
    sim.connect(1);
    sim.run_until_jobs_done(1_000);
    sim.assert_all_results_once();
}

#[test]
fn task_losing_too_many_workers_fails_as_lost() {
    let mut sim = cluster(1, 1, 10_000, Policy::LeastLoad, 9);
    let c = sim.submit(JobKind::Map, 1, 1, Targets::All);
    for _ in 0..SchedConfig::default().max_losses {
        sim.run_for(Duration::from_millis(10));
        sim.disconnect(0);
        sim.workers[0].restart();
        sim.connect(0);
    }
    sim.run_until_jobs_done(100);
    assert_eq!(sim.jobs[&c].items[&0].1, Outcome::Lost);
}

#[test]
fn retries_move_a_failed_item_to_another_worker() {
    let mut sim = cluster(3, 1, 10, Policy::LeastLoad, 10);
    sim.workers[0].failing = true;
    let mut job = spec(JobKind::Map, 6, 1, Targets::All);
    job.retries = 2;
    let c = sim.submit_spec(job);
    sim.run_until_jobs_done(1_000);
    sim.assert_all_results_once();
    let log = &sim.jobs[&c];
    assert!(
        log.items
            .values()
            .all(|(w, o)| *w != WorkerId(0) && *o == Outcome::Exited(0)),
        "{:?}",
        log.items
    );
    assert!(
        sim.workers[0].started >= 1,
        "the failing worker was never tried"
    );
    // Without retries the failure is the result.
    let c = sim.submit(JobKind::Apply, 0, 1, Targets::Ids(vec![WorkerId(0)]));
    sim.run_until_jobs_done(1_000);
    assert_eq!(sim.jobs[&c].items[&0].1, Outcome::Exited(1));
}

#[test]
fn a_failure_sent_twice_uses_one_retry() {
    let mut sim = cluster(2, 1, 10, Policy::LeastLoad, 13);
    sim.workers[0].failing = true;
    sim.workers[0].resend_failures = true;
    let mut job = spec(JobKind::Map, 1, 1, Targets::All);
    job.retries = 1;
    let c = sim.submit_spec(job);
    sim.run_until_jobs_done(1_000);
    sim.assert_all_results_once();
    assert_eq!(sim.workers[0].started, 1, "the failing worker ran it first");
    // The copy is not a second failure: the one retry still runs, on the other worker.
    assert_eq!(
        sim.jobs[&c].items[&0],
        (WorkerId(1), Outcome::Exited(0)),
        "{:?}",
        sim.jobs[&c].items
    );
}

#[test]
fn a_worker_without_room_refuses_and_nothing_fails() {
    // w0 is still busy with tasks this host does not know of (as after a host restart): it
    // refuses what it has no room for. The task waits, nothing counts as a failure, and w0
    // gets nothing more until one of its tasks finishes.
    let mut sim = cluster(1, 1, 50, Policy::LeastLoad, 14);
    let now = sim.now;
    sim.workers[0].occupy_unknown(300, now);
    let c = sim.submit(JobKind::Map, 3, 1, Targets::All);
    sim.run_until_jobs_done(10_000);
    sim.assert_all_results_once();
    assert!(sim.workers[0].refused >= 1, "nothing was refused");
    assert!(
        sim.jobs[&c]
            .items
            .values()
            .all(|(_, o)| *o == Outcome::Exited(0)),
        "a refusal counted as a failure: {:?}",
        sim.jobs[&c].items
    );
    assert!(
        sim.workers[0].refused <= 3,
        "refused {} times: placed again before a slot freed",
        sim.workers[0].refused
    );
}

#[test]
fn a_restarted_host_gives_each_worker_back_its_own_tasks() {
    let mut sim = cluster(2, 1, 1000, Policy::LeastLoad, 15);
    sim.submit(JobKind::Map, 2, 1, Targets::All);
    sim.run_for(Duration::from_millis(100));
    sim.restart_host();
    // The workers come back in the other order: w1 must not be handed w0's task.
    sim.connect(1);
    sim.run_for(Duration::from_millis(50));
    sim.connect(0);
    sim.run_until_jobs_done(10_000);
    sim.assert_all_results_once();
    let started: u64 = sim.workers.iter().map(|w| w.started).sum();
    assert_eq!(started, 2, "a task ran twice");

    // A worker that does not come back: its task waits one worker_timeout, then moves.
    let c = sim.submit(JobKind::Map, 2, 1, Targets::All);
    sim.run_for(Duration::from_millis(100));
    sim.restart_host();
    sim.workers[0].restart(); // w0's process died too
    sim.connect(1);
    sim.run_until_jobs_done(100_000);
    sim.assert_all_results_once();
    assert!(
        sim.jobs[&c].items.values().all(|(w, _)| *w == WorkerId(1)),
        "{:?}",
        sim.jobs[&c].items
    );
}

#[test]
fn retries_stay_on_the_only_worker_when_no_other_exists() {
    let mut sim = cluster(1, 1, 10, Policy::LeastLoad, 11);
    sim.workers[0].failing = true;
    let mut job = spec(JobKind::Map, 1, 1, Targets::All);
    job.retries = 3;
    let c = sim.submit_spec(job);
    sim.run_until_jobs_done(1_000);
    assert_eq!(sim.workers[0].started, 4, "1 run + 3 retries");
    assert_eq!(sim.jobs[&c].items[&0].1, Outcome::Exited(1));
}

#[test]
fn cancel_stops_queued_and_running_tasks() {
    let mut sim = cluster(2, 1, 1000, Policy::LeastLoad, 12);
    let c = sim.submit(JobKind::Map, 10, 1, Targets::All);
    sim.run_for(Duration::from_millis(100));
    sim.cancel(c, false);
    assert_eq!(sim.jobs[&c].ended, Some(JobState::Cancelled));
    assert!(sim.sched.is_idle());
    sim.jobs.remove(&c);
    sim.submit(JobKind::Map, 3, 1, Targets::All);
    sim.run_until_jobs_done(1_000);
    sim.assert_all_results_once();
}

#[test]
fn winding_down_finishes_what_runs_and_starts_nothing_new_across_a_restart() {
    for restart in [false, true] {
        let mut sim = cluster(2, 1, 1000, Policy::Thermal, 14);
        let mut job = spec(JobKind::Map, 10, 1, Targets::All);
        job.retries = 2;
        let c = sim.submit_spec(job);
        sim.run_for(Duration::from_millis(100));
        let started = |sim: &Sim| sim.workers.iter().map(|w| w.started).sum::<u64>();
        let before = started(&sim);
        assert!(before >= 2, "both workers run something");
        sim.cancel(c, true);
        assert_eq!(sim.jobs[&c].ended, None, "what runs finishes first");
        if restart {
            sim.restart_host();
            sim.run_for(Duration::from_millis(100));
            for i in 0..2 {
                sim.connect(i);
            }
        }
        sim.run_until_jobs_done(1_000);
        assert_eq!(sim.jobs[&c].ended, Some(JobState::Cancelled));
        // Every item that was sent finished and was recorded; nothing more started.
        assert_eq!(started(&sim), before, "restart {restart}");
        assert_eq!(sim.jobs[&c].items.len() as u64, before, "restart {restart}");
        assert_eq!(sim.jobs[&c].duplicates, 0);
    }
}

#[test]
fn host_restart_resumes_jobs_and_counts_each_result_once() {
    let mut sim = cluster(3, 2, 300, Policy::LeastLoad, 13);
    let mut job = spec(JobKind::Map, 30, 2, Targets::All);
    job.retries = 1;
    sim.submit_spec(job);
    sim.submit(JobKind::Apply, 0, 1, Targets::All);
    sim.run_for(Duration::from_millis(700));
    sim.restart_host(); // workers keep running; their results wait in outboxes
    sim.run_for(Duration::from_millis(500));
    for i in 0..3 {
        sim.connect(i);
    }
    sim.run_until_jobs_done(10_000);
    sim.assert_all_results_once();
}

/// Random joins, drops, freezes, host restarts and jobs; invariants after every step; every
/// item of every job exactly once at the end (the store model also rejects a second record).
#[test]
fn random_churn_keeps_invariants_and_loses_nothing() {
    for seed in seeds(1000) {
        let policy = if seed % 2 == 0 {
            Policy::RoundRobin
        } else {
            Policy::Thermal
        };
        let mut sim = Sim::new(
            SchedConfig {
                max_losses: u32::MAX,
                policy,
                ..SchedConfig::default()
            },
            seed,
        );
        let n = 2 + sim.rng.below(4) as usize;
        for i in 0..n {
            let slots = 1 + sim.rng.below(3) as u16;
            let ms = 5 + sim.rng.below(200);
            sim.add_worker(slots, ms);
            // Some broken workers, some of which send failures twice (a lost ack).
            sim.workers[i].failing = sim.rng.below(6) == 0;
            sim.workers[i].resend_failures = sim.rng.below(2) == 0;
            sim.connect(i);
        }
        for _ in 0..1 + sim.rng.below(3) {
            let items = sim.rng.below(40) as usize;
            let chunk = 1 + sim.rng.below(5) as u32;
            let kind = if sim.rng.below(4) == 0 {
                JobKind::Scatter
            } else {
                JobKind::Map
            };
            let mut job = spec(kind, items, chunk, Targets::All);
            job.retries = sim.rng.below(3) as u32;
            sim.submit_spec(job);
        }
        for _ in 0..40 {
            let i = sim.rng.below(n as u64) as usize;
            match sim.rng.below(13) {
                0 | 1 => sim.disconnect(i),
                2 | 3 if sim.workers[i].session.is_none() && !sim.workers[i].frozen => {
                    sim.connect(i)
                }
                4 | 5 => sim.workers[i].frozen = true,
                6 | 7 => sim.workers[i].frozen = false,
                8 => sim.restart_host(),
                _ => {}
            }
            let d = Duration::from_millis(sim.rng.below(3000));
            sim.run_for(d);
        }
        // Heal: everyone resumes and reconnects, so every job can finish.
        for i in 0..n {
            sim.workers[i].frozen = false;
            if sim.workers[i].session.is_none() {
                sim.connect(i);
            }
        }
        sim.run_until_jobs_done(100_000);
        sim.assert_all_results_once();
    }
}
