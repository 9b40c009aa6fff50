//! Frames between the worker and a Python engine (the protocol is described in
//! `python/bramble/_engine.py`): a u32 little-endian length, a kind byte, a body. Pure.

/// Worker → engine.
pub(crate) enum ToEngine<'a> {
    /// A job's function envelope, before its first item on this engine.
    Load { job: u64, function: &'a [u8] },
    /// One item; `None` for an apply's single call.
    Run { job: u64, item: Option<&'a [u8]> },
    /// The job ended: drop its function.
    Forget { job: u64 },
}

/// Engine → worker.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FromEngine {
    /// Once, at start.
    Hello {
        version: (u8, u8, u8),
        cloudpickle: String,
    },
    /// Printed by the running item: stream 1 stdout, 2 stderr.
    Output { stream: u8, data: Vec<u8> },
    /// The item ended.
    Done { status: Status, value: Vec<u8> },
}

/// How an item ended, as the engine says.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum Status {
    Returned,
    Raised,
    Interrupted,
}

/// The largest frame an engine may send (its output is read in 64 KiB pieces; results are
/// capped by the wire's frame limit anyway).
pub(crate) const MAX_FROM_ENGINE: usize = bramble_wire::MAX_FRAME_LEN;

/// Appends one frame to `out`.
pub(crate) fn encode(msg: &ToEngine<'_>, out: &mut Vec<u8>) {
    let (kind, job, rest): (u8, u64, &[&[u8]]) = match msg {
        ToEngine::Load { job, function } => (1, *job, &[function]),
        ToEngine::Run { job, item: Some(i) } => (2, *job, &[&[1], i]),
        ToEngine::Run { job, item: None } => (2, *job, &[&[0]]),
        ToEngine::Forget { job } => (3, *job, &[]),
    };
    let len = 1 + 8 + rest.iter().map(|p| p.len()).sum::<usize>();
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&job.to_le_bytes());
    for part in rest {
        out.extend_from_slice(part);
    }
}

/// Decodes one frame body (after the length).
pub(crate) fn decode(body: &[u8]) -> Result<FromEngine, String> {
    let (&kind, rest) = body.split_first().ok_or("an empty frame")?;
    match kind {
        10 => match rest {
            [major, minor, micro, version @ ..] => Ok(FromEngine::Hello {
                version: (*major, *minor, *micro),
                cloudpickle: String::from_utf8_lossy(version).into_owned(),
            }),
            _ => Err("a short HELLO".into()),
        },
        11 => match rest {
            [stream, data @ ..] => Ok(FromEngine::Output {
                stream: *stream,
                data: data.to_vec(),
            }),
            _ => Err("a short OUTPUT".into()),
        },
        12 => {
            let (&status, value) = rest.split_first().ok_or("a short DONE")?;
            let status = match status {
                0 => Status::Returned,
                1 => Status::Raised,
                2 => Status::Interrupted,
                other => return Err(format!("unknown DONE status {other}")),
            };
            Ok(FromEngine::Done {
                status,
                value: value.to_vec(),
            })
        }
        other => Err(format!("unknown frame kind {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_to_the_engine() {
        let mut out = Vec::new();
        encode(
            &ToEngine::Run {
                job: 2,
                item: Some(b"xy"),
            },
            &mut out,
        );
        assert_eq!(out, [12, 0, 0, 0, 2, 2, 0, 0, 0, 0, 0, 0, 0, 1, b'x', b'y']);
        out.clear();
        encode(&ToEngine::Forget { job: 1 }, &mut out);
        assert_eq!(out, [9, 0, 0, 0, 3, 1, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn frames_from_the_engine() {
        assert_eq!(
            decode(&[10, 3, 11, 2, b'3', b'.', b'1']).unwrap(),
            FromEngine::Hello {
                version: (3, 11, 2),
                cloudpickle: "3.1".into()
            }
        );
        assert_eq!(
            decode(&[12, 1, 9]).unwrap(),
            FromEngine::Done {
                status: Status::Raised,
                value: vec![9]
            }
        );
        assert!(decode(&[12, 7]).is_err());
        assert!(decode(&[]).is_err());
        assert!(decode(&[10, 3]).is_err());
    }

    /// Bounded fuzz run (CI): frame bodies from an engine, random and mangled.
    #[test]
    fn decoding_never_panics_on_any_body() {
        let samples: [&[u8]; 3] = [
            b"\x0a\x03\x0b\x07 3.0.0",
            b"\x0b\x01hello",
            b"\x0c\x00value",
        ];
        bramble_wire::fuzz::run(&samples, 256, |body| {
            let _ = decode(body);
        });
    }
}
