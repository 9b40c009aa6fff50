//! What can go wrong talking to a host.

/// A client-side failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No usable client bundle (missing, unreadable, or not a client's).
    #[error("{0}")]
    Bundle(String),
    /// No host in the bundle could be reached.
    #[error("cannot reach the host: {0}")]
    Connect(String),
    /// The connection broke or the host sent something unexpected.
    #[error("connection to the host failed: {0}")]
    Protocol(String),
    /// The host refused the request; the message says why.
    #[error("{0}")]
    Refused(String),
}

impl ClientError {
    pub(crate) fn protocol(e: impl std::fmt::Display) -> Self {
        Self::Protocol(e.to_string())
    }

    /// True if the connection itself failed (worth reconnecting), not the request.
    pub fn is_connection(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::Protocol(_))
    }
}
