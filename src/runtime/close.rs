//! Why a connection ended: the vocabulary shared by sessions, which
//! produce it, and the connection stats, which count it.

/// Why a session ended; counted per worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed cleanly and everything owed to it was sent.
    Done,
    /// The peer reset the connection or vanished mid-write.
    Reset,
    /// Any other socket error.
    Error,
    /// The server is shutting down.
    Shutdown,
}
