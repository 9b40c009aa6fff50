//! Turning a command template and an item into the argv to run and the stdin to feed. Pure.

use bramble_wire::{Command, Item, template};

/// What to spawn for one item.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Invocation {
    pub(crate) argv: Vec<String>,
    /// Bytes for the process's stdin; `None` means stdin is /dev/null.
    pub(crate) stdin: Option<Vec<u8>>,
}

/// Placeholders (`{}`, `{.}`, `{/}`, `{//}`, `{/.}`, `{N}`..., `{#}`: see
/// `bramble_wire::template`) filled with the item. Without any placeholder that takes the item,
/// the item goes to stdin (with a newline). In shell mode the argv is joined with spaces, run by
/// `sh -c`, and every value is shell-quoted; `apply` items have no value, so value
/// placeholders stay as written. (The host accepts only UTF-8 items for commands; anything
/// else is substituted lossily.)
pub(crate) fn expand(command: &Command, item: &Item) -> Invocation {
    let takes_item = command.argv.iter().any(|a| template::takes_item(a));
    let stdin = match (&item.value, takes_item) {
        (Some(v), false) => Some([v.as_slice(), b"\n"].concat()),
        _ => None,
    };
    let text = item.value.as_deref().map(String::from_utf8_lossy);
    let filled = command
        .argv
        .iter()
        .map(|a| template::fill(a, item.index, text.as_deref(), command.shell));
    let argv = if command.shell {
        vec![
            "sh".into(),
            "-c".into(),
            filled.collect::<Vec<_>>().join(" "),
        ]
    } else {
        filled.collect()
    };
    Invocation { argv, stdin }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(argv: &[&str], shell: bool) -> Command {
        Command {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            shell,
            timeout_ms: 0,
        }
    }

    fn item(index: u64, value: Option<&str>) -> Item {
        Item {
            index,
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    #[test]
    fn placeholders_fill_argv() {
        let inv = expand(
            &cmd(&["python3", "-c", "print({}**10)", "#{#}"], false),
            &item(3, Some("7")),
        );
        assert_eq!(inv.argv, ["python3", "-c", "print(7**10)", "#3"]);
        assert_eq!(inv.stdin, None);
    }

    #[test]
    fn item_goes_to_stdin_without_placeholder() {
        let inv = expand(&cmd(&["wc", "-c"], false), &item(0, Some("abc")));
        assert_eq!(inv.argv, ["wc", "-c"]);
        assert_eq!(inv.stdin.as_deref(), Some(&b"abc\n"[..]));
    }

    #[test]
    fn shell_mode_quotes_items() {
        let inv = expand(
            &cmd(&["echo", "{}", "|", "tr", "a", "b"], true),
            &item(0, Some("it's $HOME")),
        );
        assert_eq!(inv.argv, ["sh", "-c", r"echo 'it'\''s $HOME' | tr a b"]);
        let inv = expand(&cmd(&["echo {}"], true), &item(0, Some("plain-1")));
        assert_eq!(inv.argv[2], "echo plain-1");
    }

    #[test]
    fn gnu_parallel_forms_and_sources() {
        let inv = expand(
            &cmd(&["convert", "{}", "out/{/.}.png"], false),
            &item(0, Some("in/a.jpg")),
        );
        assert_eq!(inv.argv, ["convert", "in/a.jpg", "out/a.png"]);
        assert_eq!(inv.stdin, None);
        let two = format!("x{}y", template::SOURCE_SEPARATOR);
        let inv = expand(&cmd(&["echo", "{2}{1}"], false), &item(0, Some(&two)));
        assert_eq!(inv.argv, ["echo", "yx"]);
    }

    #[test]
    fn apply_items_have_no_value() {
        let inv = expand(&cmd(&["echo", "Hello World", "{#}"], false), &item(2, None));
        assert_eq!(inv.argv, ["echo", "Hello World", "2"]);
        assert_eq!(inv.stdin, None);
    }
}
