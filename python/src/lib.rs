//! `bramble._native`: the IO half of the `bramble` Python package, over `bramble-client` only
//! (no SQLite, no scheduler, no CLI). It connects, submits jobs and follows them; the
//! pure-Python modules shape ipyparallel's API on top. Every call that waits releases the GIL,
//! so other Python threads (and Ctrl-C in the main thread) carry on meanwhile.
//!
//! A client's jobs are followed by tasks on the runtime, which put every job's events into one
//! queue; `next_event` takes them out. So a thousand `apply_async` calls cost a thousand small
//! tasks here and one Python thread (the client's pump), not a thousand threads.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use bramble_client::wire::{
    EngineId, JobId, JobKind, JobSpec, JobState, PythonWork, Targets, Work,
};
use bramble_client::{Client, ClientError, JobEnd, JobEvent, Order};
use pyo3::exceptions::{PyConnectionError, PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyTuple};
use pyo3::{IntoPyObjectExt, create_exception};
use tokio::sync::mpsc;

create_exception!(
    _native,
    BrambleError,
    PyException,
    "The host refused a request; the message says why."
);

/// One runtime for every client of this process: two threads, enough for the network.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        // A runtime that cannot start leaves nothing to run: there is no way on.
        #[allow(clippy::expect_used)]
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bramble-net")
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

fn to_py(e: ClientError) -> PyErr {
    if e.is_connection() {
        PyConnectionError::new_err(e.to_string())
    } else {
        BrambleError::new_err(e.to_string())
    }
}

/// One event of one of a client's jobs; `Err` ends that job's stream (the connection is gone
/// for good, or the client closed).
type Event = (JobId, Result<JobEvent, ClientError>);

/// A connection to a bramble host (see `bramble.Client`).
#[pyclass(module = "bramble._native", frozen)]
struct NativeClient {
    client: Client,
    events: mpsc::UnboundedSender<Event>,
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Event>>,
}

#[pymethods]
impl NativeClient {
    /// Connects with `bundle`, `BRAMBLE_BUNDLE`, or the profile's client bundle; gives up
    /// after `timeout` seconds.
    #[new]
    #[pyo3(signature = (profile=None, bundle=None, timeout=10.0))]
    fn new(
        py: Python<'_>,
        profile: Option<String>,
        bundle: Option<PathBuf>,
        timeout: f64,
    ) -> PyResult<Self> {
        let bundle = bramble_client::locate::load_bundle(profile.as_deref(), bundle.as_deref())
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let limit = Duration::from_secs_f64(timeout.max(0.1));
        let client = py.detach(|| {
            runtime().block_on(async {
                tokio::time::timeout(limit, Client::connect(bundle))
                    .await
                    .unwrap_or_else(|_| {
                        Err(ClientError::Connect(format!(
                            "no answer within {timeout}s (is the host running?)"
                        )))
                    })
            })
        });
        let (events, queue) = mpsc::unbounded_channel();
        Ok(Self {
            client: client.map_err(to_py)?,
            events,
            queue: tokio::sync::Mutex::new(queue),
        })
    }

    /// Every engine: `(engine, worker, name, slot, version, problem, draining)`, by id.
    #[allow(clippy::type_complexity)]
    fn engines(
        &self,
        py: Python<'_>,
    ) -> PyResult<
        Vec<(
            u32,
            u32,
            String,
            u16,
            Option<(u8, u8, u8)>,
            Option<String>,
            bool,
        )>,
    > {
        let list = py
            .detach(|| runtime().block_on(self.client.engines()))
            .map_err(to_py)?;
        Ok(list
            .into_iter()
            .map(|e| {
                let (version, problem) = match e.python {
                    Some(p) => (p.version, p.problem),
                    None => (None, Some("its Python has not been probed yet".into())),
                };
                (
                    e.engine.0, e.worker.0, e.name, e.slot, version, problem, e.draining,
                )
            })
            .collect())
    }

    /// Submits a Python job and follows it: `kind` is `map`, `apply` or `scatter`; `targets`
    /// engine ids (or `None`: any engine for a map, every usable engine otherwise). Sets the
    /// job's id and total on `into` (its `AsyncResult`: `job`, `_total`) before returning,
    /// with no Python code in between, so an interrupt that follows finds the job to cancel.
    /// The job's events come out of `next_event`, its results in input order with `ordered`,
    /// else as they finish.
    #[pyo3(signature = (into, kind, function, items, targets, chunksize, retries, timeout, python, name, ordered))]
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        py: Python<'_>,
        into: &Bound<'_, PyAny>,
        kind: &str,
        function: &[u8],
        items: Vec<Bound<'_, PyBytes>>,
        targets: Option<Vec<u32>>,
        chunksize: u32,
        retries: u32,
        timeout: Option<f64>,
        python: (u8, u8),
        name: String,
        ordered: bool,
    ) -> PyResult<()> {
        let kind = match kind {
            "map" => JobKind::Map,
            "apply" => JobKind::Apply,
            "scatter" => JobKind::Scatter,
            other => return Err(PyValueError::new_err(format!("unknown job kind {other:?}"))),
        };
        let spec = JobSpec {
            kind,
            work: Work::Python(PythonWork {
                function: Some(function.to_vec()),
                python,
                timeout_ms: timeout.map_or(0, |s| (s * 1000.0).ceil().max(1.0) as u64),
                name,
            }),
            items: items.iter().map(|b| b.as_bytes().to_vec()).collect(),
            chunksize: chunksize.max(1),
            targets: targets.map_or(Targets::All, |t| {
                Targets::Engines(t.into_iter().map(EngineId).collect())
            }),
            retries,
            range: None,
        };
        let order = if ordered {
            Order::Input
        } else {
            Order::Completion
        };
        let mut stream = py
            .detach(|| runtime().block_on(self.client.submit_and_follow(spec, order)))
            .map_err(to_py)?;
        let (job, total) = (stream.job(), stream.total().unwrap_or(0));
        let events = self.events.clone();
        runtime().spawn(async move {
            loop {
                let event = match stream.next().await {
                    Ok(Some(event)) => event,
                    Ok(None) => break, // after `Ended`, which was passed on
                    Err(e) => {
                        let _ = events.send((job, Err(e)));
                        break;
                    }
                };
                if events.send((job, Ok(event))).is_err() {
                    break; // the client is gone
                }
            }
        });
        into.setattr("job", job.0)?;
        into.setattr("_total", total)
    }

    /// The next event of any of this client's jobs, as `(job, event)`, or `None` when none
    /// came within `timeout` seconds. Events are tuples:
    /// `("accepted", total)`,
    /// `("item", index, engine, worker, outcome, message, stdout, stderr, value, ms, truncated)`,
    /// `("output", index, engine, worker, stream, data)`, `("reconnecting", reason)`,
    /// `("finished", failed)`, `("cancelled",)`, and `("error", message, connection)`: the
    /// job cannot be followed any more (`connection`: the host is gone for good, or this
    /// client closed). A job's last event is `finished`, `cancelled` or `error`.
    fn next_event(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<(u64, Py<PyTuple>)>> {
        let limit = Duration::from_secs_f64(timeout.max(0.0));
        let event = py.detach(|| {
            runtime().block_on(async {
                let mut queue = self.queue.lock().await;
                tokio::time::timeout(limit, queue.recv())
                    .await
                    .ok()
                    .flatten()
            })
        });
        let Some((job, event)) = event else {
            return Ok(None);
        };
        let tuple = match event {
            Ok(e) => event_tuple(py, e)?,
            Err(e) => PyTuple::new(
                py,
                [
                    "error".into_bound_py_any(py)?,
                    e.to_string().into_bound_py_any(py)?,
                    e.is_connection().into_bound_py_any(py)?,
                ],
            )?,
        };
        Ok(Some((job.0, tuple.unbind())))
    }

    /// Cancels a job: queued items dropped, running ones interrupted.
    fn cancel(&self, py: Python<'_>, job: u64) -> PyResult<()> {
        py.detach(|| runtime().block_on(self.client.cancel(JobId(job))))
            .map_err(to_py)
    }

    /// Every job: `(job, kind, state, total, done, failed, elapsed_ms, command)`.
    #[allow(clippy::type_complexity)]
    fn jobs(
        &self,
        py: Python<'_>,
    ) -> PyResult<Vec<(u64, &'static str, &'static str, u64, u64, u64, u64, String)>> {
        let jobs = py
            .detach(|| runtime().block_on(self.client.jobs()))
            .map_err(to_py)?;
        Ok(jobs
            .into_iter()
            .map(|j| {
                let kind = match j.kind {
                    JobKind::Map => "map",
                    JobKind::Apply => "apply",
                    JobKind::Scatter => "scatter",
                };
                let state = match j.state {
                    JobState::Running => "running",
                    JobState::Done => "done",
                    JobState::Cancelled => "cancelled",
                };
                let (job, total, done) = (j.job.0, j.total, j.done);
                (
                    job,
                    kind,
                    state,
                    total,
                    done,
                    j.failed,
                    j.elapsed_ms,
                    j.command,
                )
            })
            .collect())
    }

    /// Disconnects; jobs keep running on the host. Streams of this client end.
    fn close(&self, py: Python<'_>) {
        py.detach(|| runtime().block_on(self.client.close()));
    }
}

fn event_tuple(py: Python<'_>, event: JobEvent) -> PyResult<Bound<'_, PyTuple>> {
    let items: Vec<Bound<'_, PyAny>> = match event {
        JobEvent::Accepted { total } => vec![
            "accepted".into_bound_py_any(py)?,
            total.into_bound_py_any(py)?,
        ],
        JobEvent::Item(r) => {
            let o = r.output;
            vec![
                "item".into_bound_py_any(py)?,
                o.index.into_bound_py_any(py)?,
                r.engine.map(|e| e.0).into_bound_py_any(py)?,
                r.worker.0.into_bound_py_any(py)?,
                o.outcome.word().into_bound_py_any(py)?,
                o.outcome.message().into_bound_py_any(py)?,
                PyBytes::new(py, &o.stdout).into_any(),
                PyBytes::new(py, &o.stderr).into_any(),
                // A bytearray: arrays unpickled from it are writable.
                PyByteArray::new(py, &o.value).into_any(),
                o.duration_ms.into_bound_py_any(py)?,
                o.truncated_bytes.into_bound_py_any(py)?,
            ]
        }
        JobEvent::Output {
            index,
            worker,
            engine,
            stream,
            data,
        } => vec![
            "output".into_bound_py_any(py)?,
            index.into_bound_py_any(py)?,
            engine.map(|e| e.0).into_bound_py_any(py)?,
            worker.0.into_bound_py_any(py)?,
            stream.into_bound_py_any(py)?,
            PyBytes::new(py, &data).into_any(),
        ],
        JobEvent::Reconnecting { reason } => vec![
            "reconnecting".into_bound_py_any(py)?,
            reason.into_bound_py_any(py)?,
        ],
        JobEvent::HostNote { message } => vec![
            "host".into_bound_py_any(py)?,
            message.into_bound_py_any(py)?,
        ],
        JobEvent::Ended(JobEnd::Finished { failed }) => vec![
            "finished".into_bound_py_any(py)?,
            failed.into_bound_py_any(py)?,
        ],
        JobEvent::Ended(JobEnd::Cancelled) => vec!["cancelled".into_bound_py_any(py)?],
    };
    PyTuple::new(py, items)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeClient>()?;
    m.add("BrambleError", m.py().get_type::<BrambleError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
