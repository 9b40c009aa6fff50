//! Property tests: random messages survive encode → split delivery → decode unchanged, and
//! random or corrupted bytes never panic the decoder nor make it allocate more than the input
//! justifies. Seeded; set `WIRE_SEED` to replay one case.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use bramble_wire::codec::{decode_body, encode_frame};
use bramble_wire::*;

/// Seeded test cases, from the same generator as every decoder's fuzz run.
struct Rng(bramble_wire::fuzz::Inputs);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn int(&mut self) -> u64 {
        // Mix small and huge values: varint boundaries matter.
        match self.below(3) {
            0 => self.below(200),
            1 => self.below(1 << 20),
            _ => self.next(),
        }
    }
    fn string(&mut self) -> String {
        let pool = ['a', 'Z', '0', ' ', '{', '}', '#', '\n', 'é', '温', '🥧'];
        (0..self.below(12))
            .map(|_| pool[self.below(pool.len() as u64) as usize])
            .collect()
    }
    fn bytes(&mut self) -> Vec<u8> {
        (0..self.below(40)).map(|_| self.next() as u8).collect()
    }
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        if self.below(2) == 0 {
            None
        } else {
            Some(f(self))
        }
    }
}

fn outcome(r: &mut Rng) -> Outcome {
    match r.below(9) {
        0 => Outcome::Exited(r.next() as i32),
        1 => Outcome::Signaled(r.below(64) as i32),
        2 => Outcome::StartFailed(r.string()),
        3 => Outcome::TimedOut,
        4 => Outcome::Cancelled,
        5 => Outcome::Returned,
        6 => Outcome::Raised,
        7 => Outcome::EngineDied(r.string()),
        _ => Outcome::Lost,
    }
}

fn output(r: &mut Rng) -> ItemOutput {
    ItemOutput {
        index: r.int(),
        outcome: outcome(r),
        stdout: r.bytes(),
        stderr: r.bytes(),
        truncated_bytes: r.int(),
        duration_ms: r.int(),
        value: r.bytes(),
    }
}

fn sha(r: &mut Rng) -> [u8; 32] {
    std::array::from_fn(|_| r.next() as u8)
}

fn work(r: &mut Rng) -> Work {
    if r.below(4) == 0 {
        return Work::StagedCommand(StagedCommand {
            command: Command {
                argv: (0..1 + r.below(4)).map(|_| r.string()).collect(),
                shell: r.below(2) == 1,
                timeout_ms: r.int(),
            },
            persistent: r.below(2) == 0,
            files: (0..r.below(3))
                .map(|_| StagedFile {
                    path: r.string(),
                    sha256: sha(r),
                    size: r.int(),
                    executable: r.below(2) == 0,
                })
                .collect(),
            fetch: (0..r.below(3)).map(|_| r.string()).collect(),
        });
    }
    if r.below(3) == 0 {
        return Work::Python(PythonWork {
            function: r.opt(Rng::bytes),
            python: (r.next() as u8, r.next() as u8),
            timeout_ms: r.int(),
            name: r.string(),
        });
    }
    Work::Command {
        command: Command {
            argv: (0..1 + r.below(4)).map(|_| r.string()).collect(),
            shell: r.below(2) == 1,
            timeout_ms: r.int(),
        },
        persistent: r.below(2) == 0,
    }
}

fn telemetry(r: &mut Rng) -> Telemetry {
    Telemetry {
        seq: r.int(),
        cpu_temp: r.opt(|r| MilliCelsius(r.next() as i32)),
        arm_clock: r.opt(|r| Megahertz(r.next() as u32)),
        arm_max: r.opt(|r| Megahertz(r.next() as u32)),
        throttle: r.opt(|r| ThrottleFlags(r.next() as u32)),
        load_milli: r.opt(|r| r.next() as u32),
        mem_available_kib: r.opt(Rng::int),
        mem_total_kib: r.opt(Rng::int),
        running: r.next() as u16,
        startup_error: r.opt(|r| {
            r.string()
                .chars()
                .take(30)
                .collect::<String>()
                .as_str()
                .try_into()
                .unwrap()
        }),
    }
}

fn to_host(r: &mut Rng) -> ToHost {
    match r.below(9) {
        7 => ToHost::FetchBlob { sha256: sha(r) },
        8 => ToHost::Board { model: r.string() },
        0 => ToHost::Hello(Hello {
            protocol_minor: r.next() as u16,
            capabilities: r.int(),
            slots: r.next() as u16,
            boot_id: r.next(),
            labels: (0..r.below(3)).map(|_| r.string()).collect(),
            arch: r.string(),
            version: r.string(),
        }),
        1 => ToHost::Telemetry(telemetry(r)),
        2 => ToHost::TaskFinished(TaskResult {
            task: TaskId(r.int()),
            attempt: Attempt(r.next() as u32),
            outputs: (0..r.below(4)).map(|_| output(r)).collect(),
            engine: r.opt(|r| r.next() as u16),
        }),
        3 => ToHost::TaskRefused {
            task: TaskId(r.int()),
            attempt: Attempt(r.next() as u32),
        },
        4 => ToHost::Python(PythonReport {
            interpreter: r.string(),
            version: r.opt(|r| (r.next() as u8, r.next() as u8, r.next() as u8)),
            problem: r.opt(Rng::string),
        }),
        5 => ToHost::Output(OutputChunk {
            task: TaskId(r.int()),
            index: r.int(),
            stream: r.next() as u8,
            data: r.bytes(),
        }),
        _ => ToHost::Goodbye,
    }
}

fn python(r: &mut Rng) -> PythonReport {
    PythonReport {
        interpreter: r.string(),
        version: r.opt(|r| (r.next() as u8, r.next() as u8, r.next() as u8)),
        problem: r.opt(Rng::string),
    }
}

fn to_worker(r: &mut Rng) -> ToWorker {
    match r.below(8) {
        0 => ToWorker::Welcome(Welcome {
            worker: WorkerId(r.next() as u32),
            heartbeat_ms: r.next() as u32,
            protocol_minor: r.next() as u16,
        }),
        1 => ToWorker::Reject { reason: r.string() },
        2 => ToWorker::RunTask(TaskSpec {
            task: TaskId(r.int()),
            attempt: Attempt(r.next() as u32),
            job: JobId(r.int()),
            work: work(r),
            items: (0..r.below(5))
                .map(|_| Item {
                    index: r.int(),
                    value: r.opt(Rng::bytes),
                })
                .collect(),
            engine: r.opt(|r| r.next() as u16),
        }),
        3 => ToWorker::CancelTask {
            task: TaskId(r.int()),
        },
        4 => ToWorker::JobEnded {
            job: JobId(r.int()),
        },
        5 => ToWorker::ResultRecorded {
            task: TaskId(r.int()),
            attempt: Attempt(r.next() as u32),
        },
        6 => ToWorker::Undrain,
        _ => ToWorker::Drain,
    }
}

fn targets(r: &mut Rng) -> Targets {
    let ids = |r: &mut Rng| (0..r.below(4)).map(|_| WorkerId(r.next() as u32)).collect();
    match r.below(4) {
        0 => Targets::All,
        1 => Targets::Ids(ids(r)),
        2 => Targets::Engines((0..r.below(4)).map(|_| EngineId(r.next() as u32)).collect()),
        _ => Targets::Select {
            ids: ids(r),
            labels: (0..r.below(3)).map(|_| r.string()).collect(),
        },
    }
}

fn kind(r: &mut Rng) -> JobKind {
    [JobKind::Map, JobKind::Apply, JobKind::Scatter][r.below(3) as usize]
}

fn client_request(r: &mut Rng) -> ClientRequest {
    match r.below(22) {
        0 => ClientRequest::Ids,
        21 => ClientRequest::History { within_ms: r.int() },
        20 => ClientRequest::WindDown {
            job: JobId(r.int()),
        },
        18 => ClientRequest::NameJob {
            job: JobId(r.int()),
            name: r.string(),
        },
        19 => ClientRequest::JobNames,
        16 => ClientRequest::Forget {
            jobs: (0..r.below(3)).map(|_| JobId(r.int())).collect(),
        },
        17 => ClientRequest::Prune {
            older_than_ms: r.opt(|r| r.int()),
            keep: r.opt(|r| r.int()),
        },
        14 => ClientRequest::MissingBlobs((0..r.below(3)).map(|_| sha(r)).collect()),
        15 => ClientRequest::PutBlob {
            sha256: sha(r),
            offset: r.int(),
            total: r.int(),
            data: r.bytes(),
        },
        12 => ClientRequest::Health,
        13 => ClientRequest::Refusals,
        1 => ClientRequest::Status,
        2 => ClientRequest::Results {
            job: JobId(r.int()),
            after: r.int(),
            follow: r.below(2) == 0,
        },
        3 => ClientRequest::Jobs,
        4 => ClientRequest::Cancel {
            job: JobId(r.int()),
        },
        5 => ClientRequest::Wait {
            job: JobId(r.int()),
        },
        6 => ClientRequest::Revoke { name: r.string() },
        7 => ClientRequest::Drain { worker: r.string() },
        8 => ClientRequest::Undrain { worker: r.string() },
        9 => ClientRequest::Engines,
        10 => ClientRequest::SubmitAndFollow(JobSpec {
            kind: kind(r),
            work: work(r),
            items: (0..r.below(3)).map(|_| r.bytes()).collect(),
            chunksize: r.next() as u32,
            targets: targets(r),
            retries: r.next() as u32,
            range: r.opt(|r| ItemRange {
                start: r.next() as i64,
                end: r.next() as i64,
            }),
        }),
        _ => ClientRequest::Submit(JobSpec {
            kind: kind(r),
            work: work(r),
            items: (0..r.below(5)).map(|_| r.bytes()).collect(),
            chunksize: r.next() as u32,
            targets: targets(r),
            retries: r.next() as u32,
            range: r.opt(|r| ItemRange {
                start: r.next() as i64,
                end: r.next() as i64,
            }),
        }),
    }
}

fn to_client(r: &mut Rng) -> ToClient {
    match r.below(18) {
        17 => ToClient::History(vec![WorkerHistory {
            name: r.string(),
            id: r.opt(|r| WorkerId(r.next() as u32)),
            model: r.opt(|r| r.string()),
            samples: (0..r.below(3))
                .map(|_| HistorySample {
                    ago_ms: r.int(),
                    cpu_temp: r.opt(|r| MilliCelsius(r.next() as i32)),
                    arm_clock: r.opt(|r| Megahertz(r.next() as u32)),
                    arm_max: r.opt(|r| Megahertz(r.next() as u32)),
                    throttle: r.opt(|r| ThrottleFlags(r.next() as u32)),
                })
                .collect(),
        }]),
        16 => ToClient::JobNames(vec![(JobId(r.int()), r.string())]),
        15 => ToClient::Forgotten((0..r.below(3)).map(|_| JobId(r.int())).collect()),
        14 => ToClient::MissingBlobs((0..r.below(3)).map(|_| sha(r)).collect()),
        13 => ToClient::Refusals(vec![Refusal {
            name: r.opt(|r| r.string()),
            address: r.string(),
            reason: r.string(),
            count: r.int(),
            ago_ms: r.int(),
        }]),
        11 => ToClient::Health(HostHealth {
            store: r.string(),
            store_free_bytes: r.opt(|r| r.int()),
            store_error: r.opt(|r| r.string()),
            stalled_ms: r.int(),
        }),
        12 => ToClient::HostNote {
            message: r.string(),
        },
        9 => ToClient::Engines(vec![EngineInfo {
            engine: EngineId(r.next() as u32),
            worker: WorkerId(r.next() as u32),
            name: r.string(),
            slot: r.next() as u16,
            python: r.opt(python),
            draining: r.below(2) == 0,
        }]),
        10 => ToClient::Output {
            job: JobId(r.int()),
            index: r.int(),
            worker: WorkerId(r.next() as u32),
            engine: r.opt(|r| EngineId(r.next() as u32)),
            stream: r.next() as u8,
            data: r.bytes(),
        },
        6 => ToClient::Jobs(vec![JobSummary {
            job: JobId(r.int()),
            kind: kind(r),
            state: [JobState::Running, JobState::Done, JobState::Cancelled][r.below(3) as usize],
            total: r.int(),
            done: r.int(),
            failed: r.int(),
            elapsed_ms: r.int(),
            command: r.string(),
        }]),
        7 => ToClient::Done,
        8 => ToClient::JobCancelled {
            job: JobId(r.int()),
        },
        0 => ToClient::Error {
            message: r.string(),
        },
        1 => ToClient::Ids((0..r.below(5)).map(|_| WorkerId(r.next() as u32)).collect()),
        2 => ToClient::Status(vec![WorkerStatus {
            id: WorkerId(r.next() as u32),
            name: r.string(),
            address: r.string(),
            slots: r.next() as u16,
            running: r.next() as u32,
            done: r.int(),
            connected_ms: r.int(),
            arch: r.string(),
            labels: vec![r.string()],
            telemetry: r.opt(telemetry),
            speed_milli: r.opt(|r| r.next() as u32),
            draining: r.below(2) == 0,
            python: r.opt(python),
            engines: (0..r.below(3)).map(|_| EngineId(r.next() as u32)).collect(),
        }]),
        3 => ToClient::JobAccepted {
            job: JobId(r.int()),
            total: r.int(),
        },
        4 => ToClient::ItemDone {
            job: JobId(r.int()),
            seq: r.int(),
            worker: WorkerId(r.next() as u32),
            engine: r.opt(|r| EngineId(r.next() as u32)),
            output: output(r),
        },
        _ => ToClient::JobFinished {
            job: JobId(r.int()),
            failed: r.int(),
        },
    }
}

/// Encodes `msgs` as one byte stream, feeds it to a decoder in random pieces, and checks that
/// exactly the same messages come out.
fn check_stream<T>(r: &mut Rng, msgs: Vec<T>)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let mut bytes = Vec::new();
    for m in &msgs {
        encode_frame(m, &mut bytes).unwrap();
    }
    let mut dec = FrameDecoder::default();
    let mut got = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let n = (1 + r.below(rest.len() as u64)) as usize;
        dec.push(&rest[..n]);
        rest = &rest[n..];
        while let Some(m) = dec.next_msg::<T>().unwrap() {
            got.push(m);
        }
    }
    dec.finish().unwrap();
    assert_eq!(got, msgs);
}

fn seeds() -> std::ops::Range<u64> {
    std::env::var("WIRE_SEED").map_or(0..500, |s| {
        let s: u64 = s.parse().expect("WIRE_SEED is a number");
        s..s + 1
    })
}

#[test]
fn random_messages_round_trip() {
    for seed in seeds() {
        let mut r = Rng(bramble_wire::fuzz::Inputs::new(seed));
        let result = std::panic::catch_unwind(move || {
            let n = 1 + r.below(5) as usize;
            let hosts = (0..n).map(|_| to_host(&mut r)).collect();
            check_stream(&mut r, hosts);
            let workers = (0..n).map(|_| to_worker(&mut r)).collect();
            check_stream(&mut r, workers);
            let reqs = (0..n).map(|_| client_request(&mut r)).collect();
            check_stream(&mut r, reqs);
            let replies = (0..n).map(|_| to_client(&mut r)).collect();
            check_stream(&mut r, replies);
        });
        assert!(result.is_ok(), "failed; replay with WIRE_SEED={seed}");
    }
}

/// Bytes a decode may allocate for `input_len` bytes of frame: 64 per input byte covers the
/// most inflating message (a `WorkerStatus` list, about 40 bytes of struct per encoded byte,
/// times two while a vector grows), plus a small constant.
fn justified(input_len: usize) -> usize {
    64 * input_len + 4096
}

/// Decodes `body` as each message type and returns the most any of them allocated at once.
fn peak_decode(body: &[u8]) -> usize {
    let mut peak = 0;
    for decode in [
        |b: &[u8]| drop(decode_body::<ToHost>(b)),
        |b: &[u8]| drop(decode_body::<ToWorker>(b)),
        |b: &[u8]| drop(decode_body::<ClientRequest>(b)),
        |b: &[u8]| drop(decode_body::<ToClient>(b)),
    ] {
        alloc::reset();
        decode(body);
        peak = peak.max(alloc::peak());
    }
    peak
}

#[test]
fn random_bytes_never_panic_nor_allocate_more_than_they_justify() {
    let mut worst = (0.0f64, 0usize);
    for seed in seeds() {
        let mut r = Rng(bramble_wire::fuzz::Inputs::new(seed ^ 0xDEAD_BEEF));
        for _ in 0..20 {
            // Garbage, and valid messages with bytes flipped (which reach deeper decoders).
            let mut body = r.bytes();
            if r.below(2) == 0 {
                body = postcard::to_allocvec(&to_client(&mut r)).unwrap();
                for _ in 0..1 + r.below(3) {
                    let i = r.below(body.len() as u64) as usize;
                    body[i] = r.next() as u8;
                }
            }
            let peak = peak_decode(&body);
            assert!(
                peak <= justified(body.len()),
                "{} bytes decoded into {peak} bytes of allocations; replay with WIRE_SEED={seed}",
                body.len()
            );
            let ratio = peak as f64 / body.len().max(1) as f64;
            if ratio > worst.0 {
                worst = (ratio, body.len());
            }
        }
    }
    eprintln!(
        "worst decode: {:.1} bytes allocated per input byte",
        worst.0
    );
}

#[test]
fn an_announced_count_reserves_little_before_elements_decode() {
    // `ToClient::Status` (variant 2), `ToWorker::RunTask`'s argv (after task 9, attempt 0,
    // job 5, `Work::Command`) and `ToClient::Jobs` (variant 6), each announcing 100 elements
    // followed by 100 bytes that are not one: nothing may be reserved for the 100 up front.
    for prefix in [&[2u8][..], &[2, 9, 0, 5, 0], &[6]] {
        let mut body = prefix.to_vec();
        body.push(100);
        body.extend([0xff; 100]);
        let peak = peak_decode(&body);
        assert!(peak <= justified(body.len()), "{prefix:?}: {peak} bytes");
    }
}

/// The peak of live bytes allocated by this thread since `reset`.
mod alloc {
    pub(super) use bramble_wire::fuzz::{peak, reset};

    #[global_allocator]
    static COUNTING: bramble_wire::fuzz::Counting = bramble_wire::fuzz::Counting;
}

/// Issue 11, item 4: big frames of empty elements (a result of a million empty outputs, a job
/// of four million empty items) used to decode into 16-32 times their size. Now at most
/// [`codec::EXPANSION`] times their size (plus a constant) goes to elements: they are refused
/// once they reach it, and what they allocated on the way stays within it.
#[test]
fn frames_of_empty_elements_are_refused_before_they_inflate() {
    use bramble_wire::codec::{EXPANSION, EXPANSION_SLACK};
    let bound = |len: usize| EXPANSION * len + EXPANSION_SLACK + 2 * len;
    let outputs = ToHost::TaskFinished(TaskResult {
        task: TaskId(1),
        attempt: Attempt(0),
        outputs: vec![ItemOutput::ended(0, Outcome::Exited(0), 0); 1_000_000],
        engine: None,
    });
    let items = ClientRequest::Submit(JobSpec {
        kind: JobKind::Map,
        work: Work::Command {
            command: Command {
                argv: vec!["true".into()],
                shell: false,
                timeout_ms: 0,
            },
            persistent: false,
        },
        items: vec![Vec::new(); 4_000_000],
        chunksize: 1,
        targets: Targets::All,
        retries: 0,
        range: None,
    });
    for (what, body) in [
        ("1M empty outputs", postcard::to_allocvec(&outputs).unwrap()),
        ("4M empty items", postcard::to_allocvec(&items).unwrap()),
    ] {
        alloc::reset();
        let decoded = match what {
            "1M empty outputs" => decode_body::<ToHost>(&body).map(drop),
            _ => decode_body::<ClientRequest>(&body).map(drop),
        };
        let peak = alloc::peak();
        eprintln!(
            "{what}: {} KiB frame, refused after {} KiB of allocations",
            body.len() >> 10,
            peak >> 10
        );
        assert!(
            matches!(decoded, Err(bramble_wire::DecodeError::Inflated(_))),
            "{what}: {decoded:?}"
        );
        assert!(peak <= bound(body.len()), "{what}: {peak} bytes");
    }

    // What real work sends still decodes: a chunk of 10,000 empty results, a million items.
    let chunk = ToHost::TaskFinished(TaskResult {
        task: TaskId(1),
        attempt: Attempt(0),
        outputs: vec![ItemOutput::ended(0, Outcome::Exited(0), 0); 10_000],
        engine: None,
    });
    let body = postcard::to_allocvec(&chunk).unwrap();
    assert_eq!(decode_body::<ToHost>(&body).unwrap(), chunk);
    let ClientRequest::Submit(mut spec) = items else {
        unreachable!()
    };
    spec.items = (0..1_000_000u32)
        .map(|i| i.to_string().into_bytes())
        .collect();
    let body = postcard::to_allocvec(&ClientRequest::Submit(spec)).unwrap();
    assert!(decode_body::<ClientRequest>(&body).is_ok());
}
