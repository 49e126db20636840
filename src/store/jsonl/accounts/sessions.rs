//! `sessions.jsonl`: `{"op":"open",…}` (a whole [`SessionRecord`]),
//! `{"op":"seen","id_hash","at_ms"}` and `{"op":"end","id_hash"}`; id
//! hashes only. Rewritten at open to one `open` line per stored session.

use std::collections::HashMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::JsonlAccounts;
use super::journal::Replay;
use crate::store::{SessionRecord, SessionStore, StoreError};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum SessionOp {
    Open(SessionRecord),
    Seen { id_hash: String, at_ms: u64 },
    End { id_hash: String },
}

/// id hash → session
#[derive(Default)]
pub(super) struct Sessions(HashMap<String, SessionRecord>);

impl Replay for Sessions {
    type Record = SessionOp;

    fn apply(&mut self, op: SessionOp) {
        match op {
            SessionOp::Open(record) => {
                self.0.insert(record.id_hash.clone(), record);
            }
            SessionOp::Seen { id_hash, at_ms } => {
                if let Some(s) = self.0.get_mut(&id_hash) {
                    s.last_seen_ms = s.last_seen_ms.max(at_ms);
                }
            }
            SessionOp::End { id_hash } => {
                self.0.remove(&id_hash);
            }
        }
    }

    fn compacted(&self) -> Vec<SessionOp> {
        self.0.values().cloned().map(SessionOp::Open).collect()
    }
}

#[async_trait]
impl SessionStore for JsonlAccounts {
    async fn save_session(&self, session: SessionRecord) -> Result<(), StoreError> {
        self.sessions.change(move |_| Ok((vec![SessionOp::Open(session)], ()))).await
    }

    async fn find_session(&self, id_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.sessions.read(|sessions| sessions.0.get(id_hash).cloned()))
    }

    async fn load_sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self.sessions.read(|sessions| sessions.0.values().cloned().collect()))
    }

    async fn touch_sessions(&self, seen: Vec<(String, u64)>) -> Result<(), StoreError> {
        self.sessions
            .change(move |sessions| {
                let ops = seen
                    .into_iter()
                    .filter(|(hash, _)| sessions.0.contains_key(hash))
                    .map(|(id_hash, at_ms)| SessionOp::Seen { id_hash, at_ms })
                    .collect();
                Ok((ops, ()))
            })
            .await
    }

    async fn delete_sessions(&self, id_hashes: Vec<String>) -> Result<(), StoreError> {
        self.sessions
            .change(move |sessions| {
                let ops = id_hashes
                    .into_iter()
                    .filter(|hash| sessions.0.contains_key(hash))
                    .map(|id_hash| SessionOp::End { id_hash })
                    .collect();
                Ok((ops, ()))
            })
            .await
    }
}
