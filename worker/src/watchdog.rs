//! systemd integration (`Type=notify`, `WatchdogSec=`): ready once the worker runs, a status
//! line, and watchdog pings sent only from the event loop, so a hung loop is restarted by
//! systemd. Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op.

use sd_notify::NotifyState;

/// Variables systemd gives the worker that its task processes must not inherit (a task could
/// otherwise ping the watchdog or report status for the worker).
pub(crate) const PRIVATE_ENV: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// Start-up is complete (configuration read, endpoint ready).
pub(crate) fn ready() {
    let _ = sd_notify::notify(&[NotifyState::Ready]);
}

/// The event loop is alive.
pub(crate) fn alive() {
    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
}

/// A one-line state for `systemctl status`.
pub(crate) fn status(line: &str) {
    let _ = sd_notify::notify(&[NotifyState::Status(line)]);
}
