//! Golden bytes: the exact postcard encoding of representative messages of protocol major 2
//! (`bramble/2`). postcard encodes enum variants by position and struct fields in order, so a
//! reorder or insert changes these bytes and fails here. A *new* message gets a new line;
//! existing lines never change (only a new major version, with a new ALPN, starts afresh).

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use bramble_wire::codec::decode_body;
use bramble_wire::*;

fn hex<T: serde::Serialize>(msg: &T) -> String {
    postcard::to_allocvec(msg)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn check<T>(msg: T, golden: &str)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(hex(&msg), golden, "encoding of {msg:?} changed");
    let bytes: Vec<u8> = (0..golden.len() / 2)
        .map(|i| u8::from_str_radix(&golden[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert_eq!(decode_body::<T>(&bytes).unwrap(), msg);
}

fn sample_output() -> ItemOutput {
    ItemOutput {
        index: 3,
        outcome: Outcome::Exited(0),
        stdout: b"hi\n".to_vec(),
        stderr: vec![],
        truncated_bytes: 0,
        duration_ms: 12,
        value: vec![],
    }
}

#[test]
fn to_host() {
    check(
        ToHost::Hello(Hello {
            protocol_minor: 0,
            capabilities: worker::CAP_COMMAND,
            slots: 4,
            boot_id: 0x1234,
            labels: vec!["rack1".into()],
            arch: "aarch64".into(),
            version: "0.1.0".into(),
        }),
        "00000104b42401057261636b31076161726368363405302e312e30",
    );
    check(
        ToHost::Telemetry(Telemetry {
            seq: 7,
            cpu_temp: Some(MilliCelsius(48_312)),
            arm_clock: Some(Megahertz(1500)),
            arm_max: Some(Megahertz(1800)),
            throttle: Some(ThrottleFlags(0x50005)),
            load_milli: Some(1250),
            mem_available_kib: Some(1_000_000),
            mem_total_kib: None,
            running: 2,
            startup_error: None,
        }),
        "010701f0f20501dc0b01880e0185801401e20901c0843d000200",
    );
    check(
        ToHost::TaskFinished(TaskResult {
            task: TaskId(9),
            attempt: Attempt(1),
            outputs: vec![sample_output()],
            engine: None,
        }),
        "020901010300000368690a00000c0000",
    );
    check(ToHost::Goodbye, "03");
    check(
        ToHost::TaskRefused {
            task: TaskId(300),
            attempt: Attempt(1),
        },
        "04ac0201",
    );
}

#[test]
fn to_worker() {
    check(
        ToWorker::Welcome(Welcome {
            worker: WorkerId(2),
            heartbeat_ms: 1000,
            protocol_minor: 0,
        }),
        "0002e80700",
    );
    check(
        ToWorker::Reject {
            reason: "revoked".into(),
        },
        "01077265766f6b6564",
    );
    check(
        ToWorker::RunTask(TaskSpec {
            task: TaskId(9),
            attempt: Attempt(0),
            job: JobId(5),
            work: Work::Command {
                command: Command {
                    argv: vec!["echo".into(), "{}".into()],
                    shell: false,
                    timeout_ms: 0,
                },
                persistent: true,
            },
            items: vec![
                Item {
                    index: 3,
                    value: Some(b"x".to_vec()),
                },
                Item {
                    index: 4,
                    value: None,
                },
            ],
            engine: None,
        }),
        "020900050002046563686f027b7d0000010203010178040000",
    );
    check(ToWorker::CancelTask { task: TaskId(300) }, "03ac02");
    check(ToWorker::Drain, "04");
    check(ToWorker::JobEnded { job: JobId(7) }, "0507");
    check(
        ToWorker::ResultRecorded {
            task: TaskId(300),
            attempt: Attempt(1),
        },
        "06ac0201",
    );
    check(ToWorker::Undrain, "07");
}

#[test]
fn client() {
    check(ClientRequest::Ids, "00");
    check(ClientRequest::Status, "01");
    check(
        ClientRequest::Submit(JobSpec {
            kind: JobKind::Map,
            work: Work::Command {
                command: Command {
                    argv: vec!["true".into()],
                    shell: true,
                    timeout_ms: 5000,
                },
                persistent: false,
            },
            items: vec![b"a".to_vec()],
            chunksize: 10,
            targets: Targets::Ids(vec![WorkerId(0), WorkerId(3)]),
            retries: 2,
            range: None,
        }),
        "020000010474727565018827000101610a010200030200",
    );
    check(ToClient::Ids(vec![WorkerId(0), WorkerId(1)]), "01020001");
    check(
        ToClient::JobAccepted {
            job: JobId(5),
            total: 64,
        },
        "030540",
    );
    check(
        ToClient::ItemDone {
            job: JobId(5),
            seq: 300,
            worker: WorkerId(1),
            engine: None,
            output: sample_output(),
        },
        "0405ac0201000300000368690a00000c00",
    );
    check(
        ToClient::JobFinished {
            job: JobId(5),
            failed: 1,
        },
        "050501",
    );
    check(
        ToClient::Error {
            message: "no".into(),
        },
        "00026e6f",
    );
    check(
        ClientRequest::Results {
            job: JobId(5),
            after: 3,
            follow: true,
        },
        "03050301",
    );
    check(ClientRequest::Jobs, "04");
    check(ClientRequest::Cancel { job: JobId(5) }, "0505");
    check(ClientRequest::Wait { job: JobId(5) }, "0605");
    check(ClientRequest::Revoke { name: "pi".into() }, "07027069");
    check(
        ClientRequest::Drain {
            worker: "pi".into(),
        },
        "08027069",
    );
    check(ClientRequest::Undrain { worker: "3".into() }, "090133");
    check(
        ToClient::Jobs(vec![JobSummary {
            job: JobId(5),
            kind: JobKind::Scatter,
            state: JobState::Cancelled,
            total: 64,
            done: 10,
            failed: 1,
            elapsed_ms: 300,
            command: "wc".into(),
        }]),
        "0601050202400a01ac02027763",
    );
    check(ToClient::Done, "07");
    check(ToClient::JobCancelled { job: JobId(5) }, "0805");
    check(
        ToClient::Status(vec![WorkerStatus {
            id: WorkerId(1),
            name: "pi".into(),
            address: "a".into(),
            slots: 4,
            running: 2,
            done: 9,
            connected_ms: 5,
            arch: "x".into(),
            labels: vec![],
            telemetry: None,
            speed_milli: Some(500),
            draining: true,
            python: None,
            engines: vec![],
        }]),
        "0201010270690161040209050178000001f403010000",
    );
    check(
        Targets::Select {
            ids: vec![WorkerId(1)],
            labels: vec!["gpu".into()],
        },
        "0201010103677075",
    );
}

#[test]
fn python() {
    check(
        ToHost::Python(PythonReport {
            interpreter: "python3".into(),
            version: Some((3, 11, 2)),
            problem: None,
        }),
        "0507707974686f6e3301030b0200",
    );
    check(
        ToHost::Output(OutputChunk {
            task: TaskId(9),
            index: 3,
            stream: 1,
            data: b"hi".to_vec(),
        }),
        "06090301026869",
    );
    check(
        ToWorker::RunTask(TaskSpec {
            task: TaskId(9),
            attempt: Attempt(0),
            job: JobId(5),
            work: Work::Python(PythonWork {
                function: Some(vec![1, 2]),
                python: (3, 11),
                timeout_ms: 0,
                name: "f".into(),
            }),
            items: vec![Item {
                index: 0,
                value: Some(vec![7]),
            }],
            engine: Some(2),
        }),
        "020900050101020102030b00016601000101070102",
    );
    check(
        ToHost::TaskFinished(TaskResult {
            task: TaskId(1),
            attempt: Attempt(0),
            outputs: vec![ItemOutput {
                value: vec![9, 9],
                ..ItemOutput::ended(0, Outcome::Returned, 5)
            }],
            engine: Some(1),
        }),
        "020100010006000000050209090101",
    );
    check(ClientRequest::Engines, "0a");
    check(
        ClientRequest::SubmitAndFollow(JobSpec {
            kind: JobKind::Apply,
            work: Work::Python(PythonWork {
                function: Some(vec![5]),
                python: (3, 9),
                timeout_ms: 0,
                name: "g".into(),
            }),
            items: vec![],
            chunksize: 1,
            targets: Targets::All,
            retries: 0,
            range: None,
        }),
        "0b010101010503090001670001000000",
    );
    check(
        ToClient::Engines(vec![EngineInfo {
            engine: EngineId(3),
            worker: WorkerId(1),
            name: "pi".into(),
            slot: 2,
            python: None,
            draining: false,
        }]),
        "09010301027069020000",
    );
    check(
        ToClient::Output {
            job: JobId(5),
            index: 3,
            worker: WorkerId(1),
            engine: Some(EngineId(3)),
            stream: 1,
            data: b"hi".to_vec(),
        },
        "0a050301010301026869",
    );
    check(Targets::Engines(vec![EngineId(0), EngineId(5)]), "03020005");
    check(ClientRequest::Health, "0c");
    check(ClientRequest::Refusals, "0d");
    check(
        ClientRequest::Prune {
            older_than_ms: Some(1),
            keep: None,
        },
        "11010100",
    );
    check(ToClient::Forgotten(vec![JobId(3)]), "0f0103");
    check(ClientRequest::WindDown { job: JobId(4) }, "1404");
    check(ClientRequest::History { within_ms: 5 }, "1505");
    check(
        ToClient::History(vec![WorkerHistory {
            name: "w".into(),
            id: Some(WorkerId(1)),
            model: None,
            samples: vec![HistorySample {
                ago_ms: 2,
                cpu_temp: Some(MilliCelsius(3)),
                arm_clock: None,
                arm_max: Some(Megahertz(4)),
                throttle: Some(ThrottleFlags(5)),
            }],
        }]),
        "11010177010100010201060001040105",
    );
    check(
        ToClient::JobNames(vec![(JobId(3), "n".into())]),
        "100103016e",
    );
    check(
        ClientRequest::NameJob {
            job: JobId(2),
            name: "n".into(),
        },
        "1202016e",
    );
    check(
        ClientRequest::MissingBlobs(vec![[7; 32]]),
        &format!("0e01{}", "07".repeat(32)),
    );
    check(
        ToHost::FetchBlob { sha256: [1; 32] },
        &format!("07{}", "01".repeat(32)),
    );
    check(
        Work::StagedCommand(StagedCommand {
            command: Command {
                argv: vec!["a".into()],
                shell: false,
                timeout_ms: 0,
            },
            persistent: false,
            files: vec![StagedFile {
                path: "p".into(),
                sha256: [2; 32],
                size: 3,
                executable: true,
            }],
            fetch: vec!["*".into()],
        }),
        &format!("02010161000000010170{}030101012a", "02".repeat(32)),
    );
    check(
        ClientRequest::Submit(JobSpec {
            kind: JobKind::Map,
            work: Work::Command {
                command: Command {
                    argv: vec!["echo".into()],
                    shell: false,
                    timeout_ms: 0,
                },
                persistent: false,
            },
            items: vec![],
            chunksize: 1,
            targets: Targets::All,
            retries: 0,
            range: Some(ItemRange { start: -1, end: 3 }),
        }),
        "02000001046563686f00000000010000010106",
    );
    check(
        ToClient::Health(HostHealth {
            store: "j".into(),
            store_free_bytes: Some(300),
            store_error: Some("full".into()),
            stalled_ms: 2,
        }),
        "0b016a01ac02010466756c6c02",
    );
    check(
        ToClient::HostNote {
            message: "ok".into(),
        },
        "0c026f6b",
    );
    check(
        ToClient::Refusals(vec![Refusal {
            name: Some("p".into()),
            address: "a".into(),
            reason: "r".into(),
            count: 2,
            ago_ms: 300,
        }]),
        "0d010101700161017202ac02",
    );
}
