//! Parsing what the user gives a job: targets, items (`--range`, `--inputs`, `:::`, `::::`),
//! and the command itself. Pure except for reading `--inputs` and `::::` files.

use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, bail};
use bramble_wire::template::SOURCE_SEPARATOR;
use bramble_wire::{ItemRange, Targets, WorkerId};

/// `all`, or ids, id ranges and labels: `0,2,5-7,gpu`. Ids alone keep their order (apply
/// prints in it); with labels, the workers matching any of them are used, by id.
pub(super) fn parse_targets(s: Option<&str>) -> anyhow::Result<Targets> {
    let Some(s) = s.map(str::trim).filter(|s| *s != "all") else {
        return Ok(Targets::All);
    };
    let mut ids = Vec::new();
    let mut labels = Vec::new();
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            bail!("empty target in --targets {s:?}");
        }
        let id = |t: &str| t.parse::<u32>().ok();
        match part.split_once('-').map(|(a, b)| (id(a), id(b))) {
            Some((Some(a), Some(b))) if a <= b => ids.extend((a..=b).map(WorkerId)),
            Some((Some(_), Some(_))) => bail!("empty range {part:?} in --targets"),
            _ => match id(part) {
                Some(n) => ids.push(WorkerId(n)),
                None => labels.push(part.to_owned()),
            },
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    ids.retain(|id| seen.insert(*id));
    Ok(if labels.is_empty() {
        Targets::Ids(ids)
    } else {
        Targets::Select { ids, labels }
    })
}

/// `A..B` → the integers A to B-1 as items (the host makes them).
pub(super) fn parse_range(s: &str) -> anyhow::Result<ItemRange> {
    let (a, b) = s
        .split_once("..")
        .with_context(|| format!("--range {s:?}: expected A..B"))?;
    let a: i64 = a
        .trim()
        .parse()
        .with_context(|| format!("--range {s:?}: bad start"))?;
    let b: i64 = b
        .trim()
        .parse()
        .with_context(|| format!("--range {s:?}: bad end"))?;
    if b < a {
        bail!("--range {s:?}: end is before start");
    }
    Ok(ItemRange { start: a, end: b })
}

/// One item per line from a file, or stdin for `-`.
pub(super) fn read_inputs(path: &Path) -> anyhow::Result<Vec<String>> {
    let lines = if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<Vec<_>, _>>()
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("--inputs {}", path.display()))?;
        std::io::BufReader::new(file).lines().collect()
    };
    lines.with_context(|| format!("reading --inputs {}", path.display()))
}

/// Items made from sources at most (every combination of several sources is one item).
const MAX_COMBINATIONS: usize = 10_000_000;

/// Splits `CMD.. ::: a b c ::: 1 2 :::: FILE` into the command and its items, GNU parallel
/// style: each `:::` gives values, each `::::` names files of one value per line (`-`: stdin);
/// several sources give every combination (the first source varying slowest), its values
/// joined for `{1}`, `{2}`, ... (`bramble_wire::template`).
pub(super) fn split_command(
    words: &[String],
) -> anyhow::Result<(Vec<String>, Option<Vec<String>>)> {
    let Some(first) = words.iter().position(|w| w == ":::" || w == "::::") else {
        if words.first().is_none_or(String::is_empty) {
            bail!("no command given (put it after `--`)");
        }
        return Ok((words.to_vec(), None));
    };
    let cmd = words[..first].to_vec();
    if cmd.first().is_none_or(String::is_empty) {
        bail!("no command given (put it after `--`)");
    }
    let mut sources: Vec<Vec<String>> = Vec::new();
    let mut files = false;
    for w in &words[first..] {
        if w == ":::" || w == "::::" {
            files = w == "::::";
            sources.push(Vec::new());
            continue;
        }
        let values = if files {
            read_inputs(Path::new(w)).with_context(|| format!(":::: {w}"))?
        } else {
            vec![w.clone()]
        };
        if let Some(source) = sources.last_mut() {
            source.extend(values);
        }
    }
    Ok((cmd, Some(combinations(sources)?)))
}

/// Every combination of one value from each source, the first varying slowest.
fn combinations(sources: Vec<Vec<String>>) -> anyhow::Result<Vec<String>> {
    let count = sources
        .iter()
        .try_fold(1usize, |n, s| n.checked_mul(s.len()))
        .filter(|n| *n <= MAX_COMBINATIONS)
        .with_context(|| format!("more than {MAX_COMBINATIONS} combinations of items"))?;
    let mut sources = sources.into_iter();
    let Some(first) = sources.next() else {
        return Ok(Vec::new());
    };
    let mut items = first;
    for source in sources {
        let mut next = Vec::with_capacity(count);
        for a in &items {
            for b in &source {
                next.push(format!("{a}{SOURCE_SEPARATOR}{b}"));
            }
        }
        items = next;
    }
    Ok(items)
}

/// An age, `90s`, `30m`, `12h`, `7d` (or plain seconds) → milliseconds.
pub(super) fn parse_age(s: &str) -> anyhow::Result<u64> {
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let secs_per: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("--older-than {s:?}: expected a number with s, m, h or d (like 7d)"),
    };
    let n: u64 = n
        .parse()
        .with_context(|| format!("--older-than {s:?}: expected a number with s, m, h or d"))?;
    n.checked_mul(secs_per * 1000)
        .with_context(|| format!("--older-than {s:?}: too long"))
}

/// Seconds (fractions allowed) → milliseconds; 0 means none.
pub(super) fn timeout_ms(secs: Option<f64>) -> anyhow::Result<u64> {
    match secs {
        None => Ok(0),
        Some(s) if s.is_finite() && s > 0.0 => Ok((s * 1000.0).ceil() as u64),
        Some(s) => bail!("--timeout {s}: must be a positive number of seconds"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn targets() {
        assert_eq!(parse_targets(None).unwrap(), Targets::All);
        assert_eq!(parse_targets(Some("all")).unwrap(), Targets::All);
        let t = parse_targets(Some("3,0-2,1")).unwrap();
        assert_eq!(
            t,
            Targets::Ids(vec![WorkerId(3), WorkerId(0), WorkerId(1), WorkerId(2)])
        );
        let t = parse_targets(Some("gpu, 2,rack-1")).unwrap();
        assert_eq!(
            t,
            Targets::Select {
                ids: vec![WorkerId(2)],
                labels: vec!["gpu".into(), "rack-1".into()]
            }
        );
        assert!(parse_targets(Some("3-1")).is_err());
        assert!(parse_targets(Some("1,,2")).is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range("-2..1000000000").unwrap(),
            ItemRange {
                start: -2,
                end: 1_000_000_000
            }
        );
        assert!(parse_range("5").is_err());
        assert!(parse_range("3..1").is_err());
    }

    #[test]
    fn gnu_parallel_items() {
        let (cmd, items) = split_command(&words("echo {} ::: a b c")).unwrap();
        assert_eq!((cmd, items.unwrap()), (words("echo {}"), words("a b c")));
        assert_eq!(split_command(&words("echo hi")).unwrap().1, None);
        assert!(split_command(&words("::: a")).is_err());
        let sep = SOURCE_SEPARATOR;
        let (_, items) = split_command(&words("echo {1} {2} ::: a b ::: 1 2 3")).unwrap();
        assert_eq!(
            items.unwrap(),
            ["a", "b"]
                .iter()
                .flat_map(|a| ["1", "2", "3"].map(|n| format!("{a}{sep}{n}")))
                .collect::<Vec<_>>()
        );
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), "x\ny\n").unwrap();
        let line = format!("cat {{}} :::: {} ::: 1", tmp.path().display());
        let (_, items) = split_command(&words(&line)).unwrap();
        assert_eq!(items.unwrap(), [format!("x{sep}1"), format!("y{sep}1")]);
        let err = split_command(&words("echo :::: /nonexistent/list")).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/list"), "{err:#}");
        let many: String = (0..4000).map(|i| format!(" {i}")).collect();
        let line = format!("echo :::{many} :::{many}");
        assert!(
            split_command(&words(&line))
                .unwrap_err()
                .to_string()
                .contains("combinations")
        );
    }

    #[test]
    fn ages() {
        assert_eq!(parse_age("90s").unwrap(), 90_000);
        assert_eq!(parse_age("7d").unwrap(), 7 * 86_400_000);
        assert_eq!(parse_age("5").unwrap(), 5_000);
        assert!(parse_age("3w").is_err() && parse_age("h").is_err());
    }

    #[test]
    fn timeouts() {
        assert_eq!(timeout_ms(None).unwrap(), 0);
        assert_eq!(timeout_ms(Some(1.5)).unwrap(), 1500);
        assert!(timeout_ms(Some(-1.0)).is_err());
    }

    /// Bounded fuzz run (CI): what users type for targets, ranges and commands gives an error
    /// or a value, never a panic.
    #[test]
    fn user_input_never_panics() {
        let samples: [&[u8]; 3] = [b"0,2,5-7,gpu", b"-2..1000000", b"echo {} ::: a b c"];
        bramble_wire::fuzz::run(&samples, 64, |input| {
            let s = String::from_utf8_lossy(input);
            let _ = parse_targets(Some(&s));
            let _ = parse_range(&s);
            // `::::` would read files named by the input.
            if !s.contains("::::") {
                let _ = split_command(&words(&s));
            }
        });
    }
}
