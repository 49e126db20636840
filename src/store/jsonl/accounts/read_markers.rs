//! `read_markers.jsonl`: `{"op":"advance","user","room","id"}` and
//! `{"op":"clear","user"}`, where `user` is the subscriber (an account's
//! lower-cased name or a guest session's id hash). A marker only moves
//! forward, so only advances are written; rewritten at open to one
//! `advance` line per marker.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::JsonlAccounts;
use super::journal::Replay;
use crate::model::RoomName;
use crate::store::{ReadMarkerStore, StoreError};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum MarkerOp {
    Advance { user: String, room: String, id: u64 },
    Clear { user: String },
}

/// subscriber → room → last read id
#[derive(Default)]
pub(super) struct ReadMarkers(HashMap<String, BTreeMap<String, u64>>);

impl ReadMarkers {
    /// Every (subscriber, room, last read id).
    pub(super) fn all(&self) -> Vec<(String, String, u64)> {
        self.0.iter().flat_map(|(user, rooms)| rooms.iter().map(|(room, id)| (user.clone(), room.clone(), *id))).collect()
    }

    fn get(&self, subscriber: &str, room: &str) -> Option<u64> {
        self.0.get(subscriber)?.get(room).copied()
    }
}

impl Replay for ReadMarkers {
    type Record = MarkerOp;

    fn apply(&mut self, op: MarkerOp) {
        match op {
            MarkerOp::Advance { user, room, id } => {
                let marker = self.0.entry(user).or_default().entry(room).or_insert(id);
                *marker = (*marker).max(id);
            }
            MarkerOp::Clear { user } => {
                self.0.remove(&user);
            }
        }
    }

    fn compacted(&self) -> Vec<MarkerOp> {
        let markers = self.0.iter().flat_map(|(user, rooms)| rooms.iter().map(move |(room, id)| (user, room, *id)));
        markers.map(|(user, room, id)| MarkerOp::Advance { user: user.clone(), room: room.clone(), id }).collect()
    }
}

#[async_trait]
impl ReadMarkerStore for JsonlAccounts {
    async fn read_marker(&self, subscriber: &str, room: &RoomName) -> Result<Option<u64>, StoreError> {
        Ok(self.read_markers.read(|markers| markers.get(subscriber, room.as_str())))
    }

    async fn markers(&self, subscriber: &str) -> Result<BTreeMap<String, u64>, StoreError> {
        Ok(self.read_markers.read(|markers| markers.0.get(subscriber).cloned().unwrap_or_default()))
    }

    async fn advance_marker(&self, subscriber: &str, room: &RoomName, id: u64) -> Result<bool, StoreError> {
        let (user, room) = (subscriber.to_string(), room.to_string());
        if self.read_markers.read(|markers| markers.get(&user, &room).is_some_and(|at| at >= id)) {
            return Ok(false); // the common repeat, answered without a blocking hop
        }
        self.read_markers
            .change(move |markers| {
                let moves = markers.get(&user, &room).is_none_or(|at| at < id);
                let ops = if moves { vec![MarkerOp::Advance { user, room, id }] } else { vec![] };
                Ok((ops, moves))
            })
            .await
    }

    async fn clear_markers(&self, subscriber: &str) -> Result<(), StoreError> {
        let user = subscriber.to_string();
        self.read_markers
            .change(move |markers| {
                let ops = if markers.0.contains_key(&user) { vec![MarkerOp::Clear { user }] } else { vec![] };
                Ok((ops, ()))
            })
            .await
    }
}
