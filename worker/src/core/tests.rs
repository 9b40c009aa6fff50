//! The worker core's decisions, input by input.

use super::*;
use bramble_wire::{Attempt, Command, ItemOutput, Outcome, PythonWork};

fn spec(task: u64, attempt: u32) -> TaskSpec {
    TaskSpec {
        task: TaskId(task),
        attempt: Attempt(attempt),
        job: JobId(1),
        work: Work::Command {
            command: Command {
                argv: vec!["true".into()],
                shell: false,
                timeout_ms: 0,
            },
            persistent: false,
        },
        items: vec![],
        engine: None,
    }
}

/// A Python task of job `job`, pinned to `engine` if given, carrying the function if given.
fn py(task: u64, job: u64, engine: Option<u16>, function: Option<&[u8]>) -> TaskSpec {
    TaskSpec {
        task: TaskId(task),
        attempt: Attempt(0),
        job: JobId(job),
        work: Work::Python(PythonWork {
            function: function.map(<[u8]>::to_vec),
            python: (3, 11),
            timeout_ms: 0,
            name: "f".into(),
        }),
        items: vec![],
        engine,
    }
}

fn start(spec: TaskSpec) -> Action {
    Action::Start(Start {
        spec,
        engine: None,
        function: None,
    })
}

/// (task, engine, function) of every start.
fn starts(actions: &[Action]) -> Vec<(u64, Option<u16>, Option<Vec<u8>>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Start(s) => Some((
                s.spec.task.0,
                s.engine,
                s.function.as_ref().map(|f| f.to_vec()),
            )),
            _ => None,
        })
        .collect()
}

fn ended(task: u64, code: i32) -> Input {
    Input::TaskEnded(TaskResult {
        task: TaskId(task),
        attempt: Attempt(0),
        outputs: vec![ItemOutput::ended(0, Outcome::Exited(code), 1)],
        engine: None,
    })
}

fn run(core: &mut Core, input: Input) -> Vec<Action> {
    core.handle(input);
    std::iter::from_fn(|| core.poll_action()).collect()
}

fn sent(actions: &[Action]) -> Vec<(u64, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(ToHost::TaskFinished(r)) => Some((r.task.0, r.attempt.0)),
            _ => None,
        })
        .collect()
}

#[test]
fn admits_up_to_slots_keeps_the_ones_sent_ahead_and_refuses_the_rest() {
    let mut c = Core::new(1, 1 << 20);
    run(&mut c, Input::Connected);
    assert_eq!(
        run(&mut c, Input::Host(ToWorker::RunTask(spec(1, 0)))),
        [start(spec(1, 0))]
    );
    assert!(
        run(&mut c, Input::Host(ToWorker::RunTask(spec(1, 1)))).is_empty(),
        "held"
    );
    assert!(
        run(&mut c, Input::Host(ToWorker::RunTask(spec(2, 0)))).is_empty(),
        "waits"
    );
    assert!(
        run(&mut c, Input::Host(ToWorker::RunTask(spec(2, 1)))).is_empty(),
        "held"
    );
    let full = 2 + u64::from(bramble_wire::worker::AHEAD_PER_SLOT);
    for task in 3..full {
        assert!(run(&mut c, Input::Host(ToWorker::RunTask(spec(task, 0)))).is_empty());
    }
    let refused = run(&mut c, Input::Host(ToWorker::RunTask(spec(full, 0))));
    assert_eq!(
        refused,
        [Action::Send(ToHost::TaskRefused {
            task: TaskId(full),
            attempt: Attempt(0)
        })]
    );
    // Task 1 ends: it answers for attempt 1, and the waiting task takes the slot as the
    // newest attempt sent.
    let a = run(&mut c, ended(1, 0));
    assert_eq!(a[0], start(spec(2, 1)));
    assert_eq!(sent(&a), [(1, 1)]);
    assert_eq!(c.running(), 1);
}

#[test]
fn cancel_drops_a_waiting_task_and_kills_a_running_one() {
    let mut c = Core::new(1, 1 << 20);
    run(&mut c, Input::Connected);
    run(&mut c, Input::Host(ToWorker::RunTask(spec(1, 0))));
    run(&mut c, Input::Host(ToWorker::RunTask(spec(2, 0))));
    assert!(
        run(
            &mut c,
            Input::Host(ToWorker::CancelTask { task: TaskId(2) })
        )
        .is_empty()
    );
    let kill = run(
        &mut c,
        Input::Host(ToWorker::CancelTask { task: TaskId(1) }),
    );
    assert_eq!(kill, [Action::Kill(TaskId(1))]);
    // The killed task's slot does not go to the dropped one.
    let a = run(&mut c, ended(1, 137));
    assert!(!a.iter().any(|a| matches!(a, Action::Start(_))), "{a:?}");
}

#[test]
fn a_drained_worker_refuses_new_work_until_undrained() {
    let mut c = Core::new(2, 1 << 20);
    run(&mut c, Input::Connected);
    run(&mut c, Input::Host(ToWorker::Drain));
    let a = run(&mut c, Input::Host(ToWorker::RunTask(spec(1, 0))));
    assert!(matches!(a[..], [Action::Send(ToHost::TaskRefused { .. })]));
    run(&mut c, Input::Host(ToWorker::Undrain));
    let a = run(&mut c, Input::Host(ToWorker::RunTask(spec(1, 0))));
    assert_eq!(a, [start(spec(1, 0))]);
}

#[test]
fn results_the_host_did_not_confirm_go_out_again_first() {
    let mut c = Core::new(4, 1 << 20);
    run(&mut c, Input::Connected);
    for t in 1..=3 {
        run(&mut c, Input::Host(ToWorker::RunTask(spec(t, 0))));
        run(&mut c, ended(t, 0));
    }
    run(
        &mut c,
        Input::Host(ToWorker::ResultRecorded {
            task: TaskId(2),
            attempt: Attempt(0),
        }),
    );
    // Another attempt's confirmation does not count.
    run(
        &mut c,
        Input::Host(ToWorker::ResultRecorded {
            task: TaskId(3),
            attempt: Attempt(7),
        }),
    );
    run(&mut c, Input::Disconnected);
    run(&mut c, Input::Host(ToWorker::RunTask(spec(4, 0))));
    run(&mut c, ended(4, 0)); // finished while disconnected
    // A restarted host that never saw task 1's result asks for it again: not run twice,
    // and the result answers for the attempt the host now expects.
    assert!(run(&mut c, Input::Host(ToWorker::RunTask(spec(1, 5)))).is_empty());
    let a = run(&mut c, Input::Connected);
    assert_eq!(sent(&a), [(1, 5), (3, 0), (4, 0)]);
    run(&mut c, Input::Disconnected);
    let a = run(&mut c, Input::Connected);
    assert_eq!(
        sent(&a),
        [(1, 5), (3, 0), (4, 0)],
        "still unconfirmed: sent again"
    );
}

#[test]
fn a_held_failure_does_not_block_a_retry() {
    let mut c = Core::new(1, 1000);
    run(&mut c, Input::Connected);
    run(&mut c, Input::Host(ToWorker::RunTask(spec(1, 0))));
    run(&mut c, ended(1, 1));
    let a = run(&mut c, Input::Host(ToWorker::RunTask(spec(1, 1))));
    assert_eq!(a, [start(spec(1, 1))]);
}

#[test]
fn a_full_outbox_drops_the_oldest_and_says_so() {
    let mut c = Core::new(1, 300);
    for t in 1..=3 {
        run(&mut c, Input::Host(ToWorker::RunTask(spec(t, 0))));
        let mut r = TaskResult {
            task: TaskId(t),
            attempt: Attempt(0),
            outputs: vec![ItemOutput::ended(0, Outcome::Exited(0), 1)],
            engine: None,
        };
        r.outputs[0].stdout = vec![b'x'; 150];
        run(&mut c, Input::TaskEnded(r));
    }
    assert_eq!(c.take_dropped(), 2);
    assert_eq!(c.take_dropped(), 0);
    assert_eq!(sent(&run(&mut c, Input::Connected)), [(3, 0)]);
}

#[test]
fn python_tasks_take_engines_and_pinned_ones_keep_their_order() {
    let mut c = Core::new(2, 1 << 20);
    run(&mut c, Input::Connected);
    let a = run(
        &mut c,
        Input::Host(ToWorker::RunTask(py(1, 7, Some(1), Some(b"f")))),
    );
    assert_eq!(starts(&a), [(1, Some(1), Some(b"f".to_vec()))]);
    // Engine 1 is busy: a second task for it waits although a slot is free...
    assert!(
        run(
            &mut c,
            Input::Host(ToWorker::RunTask(py(2, 7, Some(1), None)))
        )
        .is_empty()
    );
    // ...and an unpinned one takes the free engine 0, with the job's function.
    let a = run(&mut c, Input::Host(ToWorker::RunTask(py(3, 7, None, None))));
    assert_eq!(starts(&a), [(3, Some(0), Some(b"f".to_vec()))]);
    // Engine 0 frees first: task 2 still waits for engine 1.
    assert!(starts(&run(&mut c, ended(3, 0))).is_empty());
    assert_eq!(
        starts(&run(&mut c, ended(1, 0))),
        [(2, Some(1), Some(b"f".to_vec()))]
    );
    // The job ends: its function is dropped.
    let a = run(&mut c, Input::Host(ToWorker::JobEnded { job: JobId(7) }));
    assert_eq!(a, [Action::EndJob(JobId(7))]);
    let a = run(
        &mut c,
        Input::Host(ToWorker::RunTask(py(4, 7, Some(0), None))),
    );
    assert_eq!(starts(&a), [(4, Some(0), None)]);
}
