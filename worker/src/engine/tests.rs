//! The engine path for real: the worker's runner drives a real Python engine (the interpreter
//! from `BRAMBLE_TEST_PYTHON`, else `python3`, with cloudpickle; `scripts/test.sh` provides
//! one). Envelopes are made by the engine module's own `pack`.

use std::process::Command as Process;
use std::sync::Arc;

use bramble_wire::{
    Attempt, Item, ItemOutput, JobId, Outcome, OutputChunk, PythonWork, TaskId, TaskResult,
    TaskSpec, Work,
};
use tokio::sync::{mpsc, watch};

use super::{Engines, PythonRun, run_task};
use crate::limits::ExecLimits;

fn python() -> String {
    std::env::var("BRAMBLE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The envelope of a Python expression, packed by `_engine.pack`.
fn envelope(expr: &str) -> Vec<u8> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../python/bramble");
    let code = format!(
        "import sys; sys.path.insert(0, {dir:?}); import os, time, _engine\n\
         sys.stdout.write(_engine.pack({expr}).hex())"
    );
    let out = Process::new(python()).args(["-c", &code]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hex = String::from_utf8(out.stdout).unwrap();
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn limits() -> ExecLimits {
    ExecLimits {
        max_output_bytes: 1 << 16,
        work_dir: None,
        allow: None,
        sim: None,
    }
}

fn spec(job: u64, items: Vec<Option<Vec<u8>>>, timeout_ms: u64) -> TaskSpec {
    TaskSpec {
        task: TaskId(job * 100),
        attempt: Attempt(0),
        job: JobId(job),
        work: Work::Python(PythonWork {
            function: None,
            python: (3, 11),
            timeout_ms,
            name: "f".into(),
        }),
        items: items
            .into_iter()
            .zip(0..)
            .map(|(value, index)| Item { index, value })
            .collect(),
        engine: Some(0),
    }
}

struct Rig {
    rt: tokio::runtime::Runtime,
    engines: Engines,
    limits: ExecLimits,
    output: mpsc::UnboundedReceiver<OutputChunk>,
    output_tx: mpsc::UnboundedSender<OutputChunk>,
}

impl Rig {
    fn new() -> Self {
        let (output_tx, output) = mpsc::unbounded_channel();
        Self {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            engines: Engines::new(1, &python()),
            limits: limits(),
            output,
            output_tx,
        }
    }

    /// Runs a task of `function` (an expression packing `(f, args, kwargs)`) in engine 0.
    fn run(&self, spec: TaskSpec, function: &str, cancel: watch::Receiver<bool>) -> TaskResult {
        let run = PythonRun {
            engines: &self.engines,
            limits: &self.limits,
            function: Some(Arc::new(envelope(function))),
            slot: 0,
            output: self.output_tx.clone(),
        };
        self.rt.block_on(run_task(spec, run, cancel))
    }

    fn run_once(&self, spec: TaskSpec, function: &str) -> TaskResult {
        let (_tx, rx) = watch::channel(false);
        self.run(spec, function, rx)
    }
}

fn returned(out: &ItemOutput, expr: &str) {
    assert_eq!(out.outcome, Outcome::Returned, "{out:?}");
    assert_eq!(
        out.value,
        envelope(expr),
        "returned value of item {}",
        out.index
    );
}

#[test]
fn items_return_values_and_print_output_that_streams() {
    let mut rig = Rig::new();
    let items = (1..=3)
        .map(|x| Some(envelope(&format!("({x},)"))))
        .collect();
    let r = rig.run_once(
        spec(1, items, 0),
        "((lambda x: print('got', x) or x ** 10), (), {})",
    );
    assert_eq!(r.engine, Some(0));
    for (out, x) in r.outputs.iter().zip(1u64..) {
        returned(out, &format!("{}", x.pow(10)));
        assert_eq!(out.stdout, format!("got {x}\n").into_bytes());
    }
    // Streamed as printed (in pieces, in order), item by item.
    let mut streamed = vec![String::new(); 3];
    while let Ok(c) = rig.output.try_recv() {
        streamed[c.index as usize].push_str(std::str::from_utf8(&c.data).unwrap());
    }
    assert_eq!(streamed, ["got 1\n", "got 2\n", "got 3\n"]);
}

#[test]
fn the_namespace_is_kept_across_jobs_and_exceptions_come_back_as_errors() {
    let rig = Rig::new();
    let r = rig.run_once(spec(1, vec![None], 0), "('bramble:push', ({'x': 21},), {})");
    returned(&r.outputs[0], "None");
    let r = rig.run_once(
        spec(2, vec![None], 0),
        "('bramble:execute', ('y = 2 * x\\ny',), {})",
    );
    returned(&r.outputs[0], "42");
    let r = rig.run_once(spec(3, vec![None], 0), "('bramble:execute', ('1/0',), {})");
    assert_eq!(r.outputs[0].outcome, Outcome::Raised);
    let text = String::from_utf8_lossy(&r.outputs[0].value).into_owned();
    assert!(text.contains("ZeroDivisionError"), "{text}");
    assert!(
        !text.contains("_engine.py"),
        "the engine's own frames are hidden: {text}"
    );
}

#[test]
fn a_dead_engine_fails_its_item_says_how_and_the_next_item_gets_a_fresh_one() {
    let rig = Rig::new();
    rig.run_once(spec(1, vec![None], 0), "('bramble:push', ({'x': 1},), {})");
    // A segfault: Python's faulthandler reports it on the engine's own stderr, which the
    // worker keeps.
    let r = rig.run_once(
        spec(2, vec![None, None], 0),
        "((lambda: __import__('ctypes').string_at(0)), (), {})",
    );
    let Outcome::EngineDied(why) = &r.outputs[0].outcome else {
        panic!("{:?}", r.outputs[0]);
    };
    assert!(
        why.contains("signal 11") && why.contains("empty namespace"),
        "{why}"
    );
    assert!(why.contains("Segmentation fault"), "{why}");
    // The task's next item ran in a new engine (and died the same way).
    assert!(matches!(r.outputs[1].outcome, Outcome::EngineDied(_)));
    let r = rig.run_once(spec(3, vec![None], 0), "((lambda: os._exit(7)), (), {})");
    let Outcome::EngineDied(why) = &r.outputs[0].outcome else {
        panic!("{:?}", r.outputs[0]);
    };
    assert!(why.contains("exit status 7"), "{why}");
    let r = rig.run_once(
        spec(4, vec![None], 0),
        "((lambda: 'x' in globals()), (), {})",
    );
    returned(&r.outputs[0], "False");
}

#[test]
fn cancel_interrupts_the_item_and_the_engine_lives_on() {
    let mut rig = Rig::new();
    rig.run_once(spec(1, vec![None], 0), "('bramble:push', ({'x': 5},), {})");
    // Cancelled once the item says it runs (its output streams as printed).
    let (tx, rx) = watch::channel(false);
    let (_, none) = mpsc::unbounded_channel();
    let mut output = std::mem::replace(&mut rig.output, none);
    let cancel = std::thread::spawn(move || {
        while let Some(chunk) = output.blocking_recv() {
            if chunk.data.starts_with(b"started") {
                tx.send(true).unwrap();
                return;
            }
        }
    });
    let r = rig.run(
        spec(2, vec![None, None], 0),
        "((lambda: print('started', flush=True) or time.sleep(60)), (), {})",
        rx,
    );
    assert_eq!(r.outputs[0].outcome, Outcome::Cancelled);
    assert_eq!(
        r.outputs[1].outcome,
        Outcome::Cancelled,
        "the rest is not run"
    );
    cancel.join().unwrap();
    let r = rig.run_once(spec(3, vec![None], 0), "('bramble:pull', ('x',), {})");
    returned(&r.outputs[0], "5");
}

#[test]
fn a_timeout_interrupts_the_item() {
    let rig = Rig::new();
    let r = rig.run_once(
        spec(1, vec![None], 300),
        "((lambda: time.sleep(60)), (), {})",
    );
    assert_eq!(r.outputs[0].outcome, Outcome::TimedOut);
}
