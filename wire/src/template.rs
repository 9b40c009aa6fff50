//! Command templates, as GNU parallel writes them: the placeholders an argument may hold and
//! what each becomes for an item. Pure; the worker expands them, the scheduler checks that a
//! worker understands the ones a job uses.
//!
//! | placeholder | becomes (item `dir/sub/file.tar.gz`) |
//! |---|---|
//! | `{}` | the item (several sources: their values joined with spaces) |
//! | `{.}` | without its extension: `dir/sub/file.tar` |
//! | `{/}` | its last path component: `file.tar.gz` |
//! | `{//}` | its directory: `dir/sub` (`.` when it has none) |
//! | `{/.}` | last component without extension: `file.tar` |
//! | `{#}` | the item's 0-based index |
//! | `{N}`, `{N.}`, `{N/}`, `{N//}`, `{N/.}` | the same of the Nth source's value (1-based) |
//!
//! Several sources (`::: a b ::: 1 2`) make one item per combination, its values joined by
//! [`SOURCE_SEPARATOR`].

/// Joins the values of several sources in one item.
pub const SOURCE_SEPARATOR: char = '\u{1f}';

/// One placeholder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Index,
    /// The whole item (`None`) or one source's value, transformed.
    Value(Option<usize>, Form),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Whole,
    NoExtension,
    Base,
    Dir,
    BaseNoExtension,
}

/// The placeholder spelled by what is between `{` and `}`.
fn slot(inner: &str) -> Option<Slot> {
    if inner == "#" {
        return Some(Slot::Index);
    }
    let digits = inner.bytes().take_while(u8::is_ascii_digit).count();
    let (n, form) = inner.split_at(digits);
    let source = match n {
        "" => None,
        n => Some(n.parse::<usize>().ok().filter(|n| *n > 0)?),
    };
    let form = match form {
        "" => Form::Whole,
        "." => Form::NoExtension,
        "/" => Form::Base,
        "//" => Form::Dir,
        "/." => Form::BaseNoExtension,
        _ => return None,
    };
    Some(Slot::Value(source, form))
}

/// The placeholders of `arg` with where they are: `(start, end, slot)`.
fn slots(arg: &str) -> Vec<(usize, usize, Slot)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = arg[from..].find('{').map(|i| i + from) {
        let Some(close) = arg[open..].find('}').map(|i| i + open) else {
            break;
        };
        match slot(&arg[open + 1..close]) {
            Some(s) => {
                out.push((open, close + 1, s));
                from = close + 1;
            }
            None => from = open + 1,
        }
    }
    out
}

/// Whether an argument takes the item (any placeholder but `{#}`): without one in any
/// argument, the item goes to the command's stdin.
pub fn takes_item(arg: &str) -> bool {
    slots(arg).iter().any(|(_, _, s)| *s != Slot::Index)
}

/// Whether an argument uses a placeholder beyond `{}` and `{#}` (workers announce that they
/// understand them with `CAP_TEMPLATES`).
pub fn uses_extended(arg: &str) -> bool {
    slots(arg)
        .iter()
        .any(|(_, _, s)| !matches!(s, Slot::Index | Slot::Value(None, Form::Whole)))
}

/// `arg` with its placeholders filled for an item; `quote` shell-quotes each value. Without a
/// value (`apply`), value placeholders stay as written.
pub fn fill(arg: &str, index: u64, value: Option<&str>, quote: bool) -> String {
    let found = slots(arg);
    if found.is_empty() {
        return arg.to_owned();
    }
    let values: Vec<&str> = value.map_or_else(Vec::new, |v| v.split(SOURCE_SEPARATOR).collect());
    let mut out = String::with_capacity(arg.len());
    let mut last = 0;
    for (start, end, s) in found {
        out.push_str(&arg[last..start]);
        last = end;
        let text = match s {
            Slot::Index => index.to_string(),
            Slot::Value(_, _) if value.is_none() => arg[start..end].to_owned(),
            Slot::Value(None, form) if values.len() > 1 => {
                let each: Vec<String> = values
                    .iter()
                    .map(|v| transform(v, form))
                    .map(|v| if quote { crate::shell_quote(&v) } else { v })
                    .collect();
                out.push_str(&each.join(" "));
                continue;
            }
            Slot::Value(None, form) => transform(values.first().copied().unwrap_or(""), form),
            Slot::Value(Some(n), form) => transform(values.get(n - 1).copied().unwrap_or(""), form),
        };
        if quote && !matches!(s, Slot::Index) {
            out.push_str(&crate::shell_quote(&text));
        } else {
            out.push_str(&text);
        }
    }
    out.push_str(&arg[last..]);
    out
}

fn transform(value: &str, form: Form) -> String {
    let base = |v: &str| v.rsplit_once('/').map_or(v, |(_, b)| b).to_owned();
    let no_ext = |v: &str| {
        let (dir, name) = v.rsplit_once('/').map_or(("", v), |(d, n)| (d, n));
        match name.rfind('.') {
            Some(i) if i > 0 => {
                if v.len() == name.len() {
                    name[..i].to_owned()
                } else {
                    format!("{dir}/{}", &name[..i])
                }
            }
            _ => v.to_owned(),
        }
    };
    match form {
        Form::Whole => value.to_owned(),
        Form::NoExtension => no_ext(value),
        Form::Base => base(value),
        Form::Dir => match value.rsplit_once('/') {
            Some(("", _)) => "/".to_owned(),
            Some((d, _)) => d.to_owned(),
            None => ".".to_owned(),
        },
        Form::BaseNoExtension => no_ext(&base(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gnu_parallel_placeholders() {
        let item = Some("dir/sub/file.tar.gz");
        let f = |arg: &str| fill(arg, 4, item, false);
        assert_eq!(f("{}"), "dir/sub/file.tar.gz");
        assert_eq!(f("{.}"), "dir/sub/file.tar");
        assert_eq!(f("{/}"), "file.tar.gz");
        assert_eq!(f("{//}"), "dir/sub");
        assert_eq!(f("{/.}"), "file.tar");
        assert_eq!(f("out/{/.}.png#{#}"), "out/file.tar.png#4");
        assert_eq!(fill("{//}|{.}|{/.}", 0, Some("a.b"), false), ".|a|a");
        assert_eq!(fill("{.}", 0, Some(".bashrc"), false), ".bashrc");
        assert_eq!(fill("{//}", 0, Some("/x"), false), "/");
        // Not placeholders: kept as written.
        assert_eq!(f("{x} {0} {} {"), "{x} {0} dir/sub/file.tar.gz {");
        assert_eq!(f("awk '{print $1}'"), "awk '{print $1}'");
    }

    #[test]
    fn several_sources() {
        let item = format!("a.txt{SOURCE_SEPARATOR}2");
        let f = |arg: &str, quote| fill(arg, 0, Some(&item), quote);
        assert_eq!(f("{1.}-{2}", false), "a-2");
        assert_eq!(f("{}", false), "a.txt 2");
        assert_eq!(f("{3}", false), "");
        assert_eq!(f("echo {}", true), "echo a.txt 2");
        assert_eq!(fill("echo {1}", 0, Some("it's"), true), r"echo 'it'\''s'");
    }

    #[test]
    fn which_arguments_take_the_item() {
        assert!(takes_item("x{/.}y") && takes_item("{2}") && !takes_item("#{#}"));
        assert!(!takes_item("{print}"));
        assert!(uses_extended("{.}") && uses_extended("{1}") && !uses_extended("{} {#}"));
        assert_eq!(fill("{} {#}", 1, None, false), "{} 1");
    }
}
