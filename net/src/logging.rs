//! Log set-up of the `bramble` and `bramble-worker` binaries: to stderr, colour only on a
//! terminal, `BRAMBLE_LOG=debug|info|warn|error` over the binary's default level.

/// Installs the subscriber; `default` is the level without `BRAMBLE_LOG`.
pub fn init(default: tracing::Level) {
    let level = std::env::var("BRAMBLE_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(default);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
