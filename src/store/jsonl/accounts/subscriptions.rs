//! `subscriptions.jsonl`: `{"op":"add","user","room"}` and
//! `{"op":"remove","user","room"}`, where `user` is the subscriber (an
//! account's lower-cased name or a guest session's id hash). Rewritten at
//! open to one `add` line per current subscription.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::JsonlAccounts;
use super::journal::Replay;
use crate::model::RoomName;
use crate::store::{StoreError, SubscriptionStore};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum SubscriptionOp {
    Add { user: String, room: String },
    Remove { user: String, room: String },
}

/// subscriber → rooms (never an empty set)
#[derive(Default)]
pub(super) struct Subscriptions(HashMap<String, BTreeSet<String>>);

impl Subscriptions {
    /// Every (subscriber, room).
    pub(super) fn pairs(&self) -> Vec<(String, String)> {
        self.0.iter().flat_map(|(user, rooms)| rooms.iter().map(|room| (user.clone(), room.clone()))).collect()
    }

    fn has(&self, subscriber: &str, room: &str) -> bool {
        self.0.get(subscriber).is_some_and(|rooms| rooms.contains(room))
    }
}

impl Replay for Subscriptions {
    type Record = SubscriptionOp;

    fn apply(&mut self, op: SubscriptionOp) {
        match op {
            SubscriptionOp::Add { user, room } => {
                self.0.entry(user).or_default().insert(room);
            }
            SubscriptionOp::Remove { user, room } => {
                if let Some(rooms) = self.0.get_mut(&user) {
                    rooms.remove(&room);
                    if rooms.is_empty() {
                        self.0.remove(&user);
                    }
                }
            }
        }
    }

    fn compacted(&self) -> Vec<SubscriptionOp> {
        self.0
            .iter()
            .flat_map(|(user, rooms)| rooms.iter().map(|room| SubscriptionOp::Add { user: user.clone(), room: room.clone() }))
            .collect()
    }
}

#[async_trait]
impl SubscriptionStore for JsonlAccounts {
    async fn subscribe(&self, subscriber: &str, room: &RoomName) -> Result<(), StoreError> {
        let (user, room) = (subscriber.to_string(), room.to_string());
        self.subscriptions
            .change(move |subs| {
                let ops = if subs.has(&user, &room) { vec![] } else { vec![SubscriptionOp::Add { user, room }] };
                Ok((ops, ()))
            })
            .await
    }

    async fn subscriptions(&self, subscriber: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.subscriptions.read(|subs| subs.0.get(subscriber).map(|r| r.iter().cloned().collect()).unwrap_or_default()))
    }

    async fn unsubscribe(&self, subscriber: &str, room: &RoomName) -> Result<(), StoreError> {
        let (user, room) = (subscriber.to_string(), room.to_string());
        self.subscriptions
            .change(move |subs| {
                let ops = if subs.has(&user, &room) { vec![SubscriptionOp::Remove { user, room }] } else { vec![] };
                Ok((ops, ()))
            })
            .await
    }

    async fn clear_subscriptions(&self, subscriber: &str) -> Result<(), StoreError> {
        let user = subscriber.to_string();
        self.subscriptions
            .change(move |subs| {
                let rooms = subs.0.get(&user).into_iter().flatten();
                let ops = rooms.map(|room| SubscriptionOp::Remove { user: user.clone(), room: room.clone() }).collect();
                Ok((ops, ()))
            })
            .await
    }
}
