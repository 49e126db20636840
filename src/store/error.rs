//! The one error every storage backend speaks, whatever it stores in.
//!
//! A [`StoreError`] says *what kind* of failure happened, not which backend
//! had it: a file that could not be written (`500 internal` at the HTTP
//! edge) and a database that could not be reached (`Unavailable`: `503
//! store_unavailable`, worth retrying) are failures the caller cannot fix,
//! while a name that is taken is the caller's answer (`409`).
//! `From<StoreError> for ChatError` makes that split, once.
//!
//! A failure is logged once, where it is rendered (`http::reply::error`,
//! the socket, or the task that gave up): the store returns it with its
//! cause and does not log it too.

use std::io;
use std::path::PathBuf;

use crate::error::ChatError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A data file could not be used: what was being done, to which file,
    /// and why. Its text is what the server says when it cannot start:
    /// "cannot open /data/users.jsonl: …".
    #[error("cannot {action} {}: {cause}", path.display())]
    Io { action: &'static str, path: PathBuf, cause: io::Error },
    /// The backend could not do it, for a reason that names no file (a
    /// worker that died, a database that cannot be reached).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// `create_user`: the name, or one that looks like it, is an account.
    #[error("the name '{0}' is taken")]
    NameTaken(String),
    /// No room with that name.
    #[error("no room named '{0}'")]
    RoomNotFound(String),
    /// `create_room`: the room is there already.
    #[error("a room named '{0}' already exists")]
    RoomExists(String),
    /// An edit or delete of a message that does not exist (or is deleted).
    #[error("no message {0} in this room")]
    MessageNotFound(u64),
    /// An edit or delete of someone else's message.
    #[error("only its author may change a message")]
    NotAuthor,
    /// Two sets of data that cannot be combined (`chatroom migrate` into a
    /// database whose room holds another history).
    #[error("{0}")]
    Conflict(String),
    /// The database's schema is newer than this binary knows (a newer
    /// chatroom migrated it): nothing is written to it.
    #[error("the database is at schema version {database}, this chatroom knows up to {known}: upgrade chatroom")]
    SchemaTooNew { database: i32, known: i32 },
}

impl StoreError {
    /// A data file could not be written because its disk (or the quota of
    /// the server's user) is full: `storage_full` to the client.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Io { cause, .. } if matches!(cause.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded))
    }
}

/// A failed batch answers each of its senders: the same error for each (an
/// I/O cause keeps its kind and text).
impl Clone for StoreError {
    fn clone(&self) -> Self {
        match self {
            StoreError::Io { action, path, cause } => {
                StoreError::Io { action, path: path.clone(), cause: io::Error::new(cause.kind(), cause.to_string()) }
            }
            StoreError::Unavailable(why) => StoreError::Unavailable(why.clone()),
            StoreError::NameTaken(name) => StoreError::NameTaken(name.clone()),
            StoreError::RoomNotFound(room) => StoreError::RoomNotFound(room.clone()),
            StoreError::RoomExists(room) => StoreError::RoomExists(room.clone()),
            StoreError::MessageNotFound(id) => StoreError::MessageNotFound(*id),
            StoreError::NotAuthor => StoreError::NotAuthor,
            StoreError::Conflict(why) => StoreError::Conflict(why.clone()),
            StoreError::SchemaTooNew { database, known } => StoreError::SchemaTooNew { database: *database, known: *known },
        }
    }
}

/// The JSON-lines backend wraps its I/O errors in a `FileError` that names
/// the file (inside an `io::Error` of the same kind); that becomes
/// [`StoreError::Io`]. Any other I/O error names no file: `Unavailable`.
impl From<io::Error> for StoreError {
    fn from(error: io::Error) -> Self {
        if !error.get_ref().is_some_and(|inner| inner.is::<crate::store::jsonl::FileError>()) {
            return StoreError::Unavailable(error.to_string());
        }
        let inner = error.into_inner().expect("checked above");
        let file = inner.downcast::<crate::store::jsonl::FileError>().expect("checked above");
        StoreError::Io { action: file.action, path: file.path, cause: file.cause }
    }
}

/// A worker thread that panicked or was cancelled.
impl From<tokio::task::JoinError> for StoreError {
    fn from(error: tokio::task::JoinError) -> Self {
        StoreError::Unavailable(format!("a storage task failed: {error}"))
    }
}

/// Answers (taken, not found, not yours) become the answer they are;
/// failures become `Storage`.
impl From<StoreError> for ChatError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NameTaken(name) => ChatError::NameTaken(name),
            StoreError::RoomNotFound(room) => ChatError::RoomNotFound(room),
            StoreError::RoomExists(room) => ChatError::RoomExists(room),
            StoreError::MessageNotFound(id) => ChatError::MessageNotFound(id),
            StoreError::NotAuthor => ChatError::Forbidden("only its author may change a message".into()),
            failure => ChatError::Storage(failure),
        }
    }
}

/// For the code that still speaks `io::Error` (the message store).
impl From<io::Error> for ChatError {
    fn from(error: io::Error) -> Self {
        StoreError::from(error).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::jsonl::FileError;

    #[test]
    fn a_file_error_keeps_its_file_and_cause() {
        let cause = io::Error::from_raw_os_error(28);
        let file = FileError { action: "append to", path: "/data/users.jsonl".into(), cause };
        let error = StoreError::from(io::Error::new(io::ErrorKind::StorageFull, file));
        assert!(matches!(&error, StoreError::Io { action: "append to", path, .. } if path.ends_with("users.jsonl")));
        assert!(error.to_string().starts_with("cannot append to /data/users.jsonl: "), "{error}");
        let chat = ChatError::from(error);
        assert_eq!((chat.code(), chat.http_status()), ("storage_full", 507));
    }

    #[test]
    fn another_file_error_is_internal() {
        let file = FileError { action: "append to", path: "/data/users.jsonl".into(), cause: io::Error::from_raw_os_error(30) };
        let chat = ChatError::from(StoreError::from(io::Error::new(io::ErrorKind::ReadOnlyFilesystem, file)));
        assert_eq!((chat.code(), chat.http_status()), ("internal", 500));
    }

    #[test]
    fn a_taken_name_is_an_answer_not_a_failure() {
        let chat = ChatError::from(StoreError::NameTaken("ann".into()));
        assert!(matches!(chat, ChatError::NameTaken(name) if name == "ann"));
    }
}
