//! Simulation tests of the `thermal` policy against `leastload` and `roundrobin`, with the
//! makespan compared to the ideal (fluid) bound computed here.

use std::time::Duration;

use bramble_wire::{JobKind, Targets};

use bramble_sched::{Policy, SchedConfig};

use super::harness::Sim;

/// Something done to the cluster at a virtual time (e.g. throttling).
type Change<'a> = (Duration, &'a dyn Fn(&mut Sim));

/// Makespan of one map job of `tasks` single-item tasks on single-slot workers whose item
/// times (ms) are `speeds`; `change` may alter the cluster at a virtual time (throttling).
fn makespan(policy: Policy, speeds: &[u64], tasks: usize, change: Option<Change<'_>>) -> Duration {
    let mut sim = Sim::new(
        SchedConfig {
            policy,
            ..SchedConfig::default()
        },
        1,
    );
    sim.jitter = true;
    for (i, ms) in speeds.iter().enumerate() {
        sim.add_worker(1, *ms);
        sim.workers[i].clock = Some((1500, 1500));
        sim.connect(i);
    }
    let job = sim.submit(JobKind::Map, tasks, 1, Targets::All);
    if let Some((at, f)) = change {
        sim.run_for(at);
        f(&mut sim);
    }
    sim.run_until_jobs_done(1_000_000);
    sim.assert_all_results_once();
    sim.jobs[&job].makespan.expect("job ended")
}

/// The fluid bound: all workers busy all the time, work split in proportion to speed.
fn ideal(speeds: &[u64], tasks: usize) -> Duration {
    let rate: f64 = speeds.iter().map(|ms| 1.0 / *ms as f64).sum();
    Duration::from_secs_f64(tasks as f64 / rate / 1000.0)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

#[test]
fn heterogeneous_workers_finish_near_the_ideal_bound() {
    // The benchmark of the issue: 2 fast + 2 three-times-slower workers, 200 tasks of 20 ms.
    let speeds = [20, 20, 60, 60];
    let bound = ideal(&speeds, 200);
    let thermal = makespan(Policy::Thermal, &speeds, 200, None);
    let leastload = makespan(Policy::LeastLoad, &speeds, 200, None);
    let roundrobin = makespan(Policy::RoundRobin, &speeds, 200, None);
    eprintln!(
        "ideal {bound:?}: thermal {:.3}x, leastload {:.3}x, roundrobin {:.3}x",
        ratio(thermal, bound),
        ratio(leastload, bound),
        ratio(roundrobin, bound)
    );
    assert!(
        ratio(thermal, bound) <= 1.03,
        "thermal {thermal:?} vs ideal {bound:?}"
    );
    assert!(thermal <= leastload && thermal <= roundrobin);
}

#[test]
fn throttling_that_starts_mid_job_moves_work_to_cool_workers() {
    // Four equal workers; after 1 s two of them throttle to 40 % of their clock.
    let throttle = |sim: &mut Sim| {
        for w in &mut sim.workers[..2] {
            w.item_ms = 75;
            w.clock = Some((600, 1500));
            w.temp_c = Some(86.0);
            w.throttle = 0x6_0006;
        }
    };
    let at = Duration::from_secs(1);
    let before = 1000.0 * 4.0 / 30.0;
    let after_rate = 2.0 / 30.0 + 2.0 / 75.0;
    let bound = Duration::from_secs_f64((1000.0 + (400.0 - before) / after_rate) / 1000.0);
    let speeds = [30, 30, 30, 30];
    let thermal = makespan(Policy::Thermal, &speeds, 400, Some((at, &throttle)));
    let leastload = makespan(Policy::LeastLoad, &speeds, 400, Some((at, &throttle)));
    eprintln!(
        "ideal {bound:?}: thermal {:.3}x, leastload {:.3}x",
        ratio(thermal, bound),
        ratio(leastload, bound)
    );
    assert!(
        ratio(thermal, bound) <= 1.05,
        "thermal {thermal:?} vs ideal {bound:?}"
    );
    assert!(thermal <= leastload);
}

#[test]
fn an_under_volted_worker_is_the_last_choice() {
    let mut sim = Sim::new(
        SchedConfig {
            policy: Policy::Thermal,
            ..SchedConfig::default()
        },
        2,
    );
    for i in 0..3 {
        sim.add_worker(1, 20);
        sim.connect(i);
    }
    sim.workers[0].throttle = 0x1_0000; // under-voltage has occurred on worker 0
    sim.run_for(Duration::from_millis(1100)); // a telemetry round
    // Small jobs while everyone is idle: never on the under-volted worker.
    for _ in 0..5 {
        sim.submit(JobKind::Map, 2, 1, Targets::All);
        sim.run_until_jobs_done(10_000);
    }
    assert_eq!(
        sim.workers[0].started,
        0,
        "{:?}",
        sim.workers.iter().map(|w| w.started).collect::<Vec<_>>()
    );
    // A long queue still uses it: its capacity is not wasted.
    sim.submit(JobKind::Map, 60, 1, Targets::All);
    sim.run_until_jobs_done(100_000);
    sim.assert_all_results_once();
    assert!(sim.workers[0].started > 10);
}

#[test]
fn coarse_tasks_are_not_left_to_slow_workers_at_the_end() {
    // Slow workers first (ids are arbitrary): slot-count policies hand them the last tasks.
    let speeds = [3000, 3000, 1000, 1000];
    let bound = ideal(&speeds, 10);
    let thermal = makespan(Policy::Thermal, &speeds, 10, None);
    let leastload = makespan(Policy::LeastLoad, &speeds, 10, None);
    eprintln!(
        "coarse: ideal {bound:?}: thermal {:.3}x, leastload {:.3}x",
        ratio(thermal, bound),
        ratio(leastload, bound)
    );
    assert!(ratio(thermal, bound) < 1.2, "thermal {thermal:?}");
    assert!(
        ratio(thermal, leastload) < 0.8,
        "thermal {thermal:?} vs leastload {leastload:?}"
    );
}

#[test]
fn a_straggler_is_re_run_on_an_idle_worker_and_the_first_result_wins() {
    let mut sim = Sim::new(
        SchedConfig {
            policy: Policy::Thermal,
            ..SchedConfig::default()
        },
        3,
    );
    for i in 0..4 {
        sim.add_worker(1, 50);
        sim.connect(i);
    }
    // Warm up so the scheduler knows everyone takes 50 ms.
    sim.submit(JobKind::Map, 20, 1, Targets::All);
    sim.run_until_jobs_done(10_000);
    // Worker 3 suddenly takes 5 s per item (a hang, a throttle telemetry did not show).
    sim.workers[3].item_ms = 5000;
    let job = sim.submit(JobKind::Map, 12, 1, Targets::All);
    sim.run_until_jobs_done(100_000);
    sim.assert_all_results_once();
    let makespan = sim.jobs[&job].makespan.unwrap();
    assert!(
        makespan < Duration::from_millis(1000),
        "waited for the straggler: {makespan:?}"
    );
    assert!(
        sim.jobs[&job].items.values().all(|(w, _)| w.0 != 3),
        "the slow copy won"
    );
}

#[test]
fn status_reports_each_workers_speed_relative_to_the_fastest() {
    let mut sim = Sim::new(SchedConfig::default(), 4);
    for (i, ms) in [20, 60].into_iter().enumerate() {
        sim.add_worker(1, ms);
        sim.connect(i);
    }
    assert!(
        sim.sched
            .status(sim.now)
            .iter()
            .all(|r| r.speed_milli.is_none()),
        "no observation yet"
    );
    sim.submit(JobKind::Map, 40, 1, Targets::All);
    sim.run_until_jobs_done(10_000);
    let speeds: Vec<Option<u32>> = sim
        .sched
        .status(sim.now)
        .iter()
        .map(|r| r.speed_milli)
        .collect();
    assert_eq!(speeds, [Some(1000), Some(333)]);
}
