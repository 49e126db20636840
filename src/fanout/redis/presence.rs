//! Presence across nodes: who has a room open, on any node.
//!
//! Each room has a sorted set `{prefix}:presence:{room}`. Its members are
//! `{node}␟{user}` (the node in hex, the name as shown), each scored by
//! when it expires (unix ms). A node keeps its own members alive with a
//! heartbeat (`RedisTimings::heartbeat`) and removes one when its user's
//! last local connection to the room closes; `online` is the union of the
//! unexpired members. A node that dies stops renewing: every node prunes
//! the expired members of the rooms it serves, and the one whose `ZREM`
//! removed a member announces that user offline (unless they are still
//! online somewhere), so a dead node's users leave within the TTL plus one
//! prune period. That node also sends the room a resync marker: what the
//! dead node stored but had not published yet is re-read from the store by
//! every connection, instead of waiting for the room's next event.
//!
//! Arrivals and departures go through one task, in the order they were
//! asked, so a quick leave-and-rejoin cannot remove a fresh entry. "First
//! in the cluster" is read before this node's entry is added (in one
//! `MULTI`), so two nodes arriving at once both announce rather than
//! neither; Redis down means this node is taken for the whole cluster.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ::redis::RedisError;
use ::redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::fanout::RoomEvent;
use crate::model::{RoomName, unix_ms};
use crate::protocol::ServerEvent;

const SEPARATOR: char = '\u{1f}';

/// One arrival or departure of a user on this node; the reply says
/// whether to announce it (first or last in the cluster).
pub(super) enum PresenceOp {
    Arrive { room: RoomName, user: String, reply: oneshot::Sender<bool> },
    Depart { room: RoomName, user: String, reply: oneshot::Sender<bool> },
}

/// This node's users per room: lower-cased name → name as shown.
type Here = HashMap<RoomName, HashMap<String, String>>;

/// Runs arrivals, departures, the heartbeat and the pruning until `stop`.
pub(super) async fn run(shared: Arc<Shared>, mut ops: mpsc::UnboundedReceiver<PresenceOp>, stop: CancellationToken) {
    let mut here = Here::new();
    let mut connection = shared.commands.subscribe();
    let mut heartbeat = tokio::time::interval(shared.timings.heartbeat);
    let mut prune = tokio::time::interval(shared.timings.prune);
    for tick in [&mut heartbeat, &mut prune] {
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            Some(op) = ops.recv() => apply(&shared, &mut here, op).await,
            // Back after an outage: this node's entries may have expired.
            Ok(()) = connection.changed() => {
                if connection.borrow_and_update().is_some() {
                    renew(&shared, &here).await;
                }
            }
            _ = heartbeat.tick() => renew(&shared, &here).await,
            _ = prune.tick() => prune_expired(&shared, &here).await,
        }
    }
}

/// Who has the room open according to Redis (nobody, if it is down).
pub(super) async fn online(commands: Option<MultiplexedConnection>, key: String) -> Vec<String> {
    let Some(mut commands) = commands else { return Vec::new() };
    let members = ::redis::cmd("ZRANGEBYSCORE").arg(&key).arg(unix_ms()).arg("+inf").query_async::<Vec<String>>(&mut commands).await;
    match members {
        Ok(members) => {
            let mut seen = HashSet::new();
            members.iter().filter_map(|m| user_of(m)).filter(|user| seen.insert(user.to_lowercase())).map(str::to_string).collect()
        }
        Err(e) => {
            tracing::debug!(error = %e, "could not read presence from Redis; showing this node's only");
            Vec::new()
        }
    }
}

async fn apply(shared: &Shared, here: &mut Here, op: PresenceOp) {
    match op {
        PresenceOp::Arrive { room, user, reply } => {
            here.entry(room.clone()).or_default().insert(user.to_lowercase(), user.clone());
            let first = answer_or_announce(arrive_in_redis(shared, &room, &user).await);
            let _ = reply.send(first);
        }
        PresenceOp::Depart { room, user, reply } => {
            if let Some(users) = here.get_mut(&room) {
                users.remove(&user.to_lowercase());
                if users.is_empty() {
                    here.remove(&room);
                }
            }
            let last = answer_or_announce(depart_in_redis(shared, &room, &user).await);
            let _ = reply.send(last);
        }
    }
}

/// Without an answer from Redis, this node speaks for the cluster.
fn answer_or_announce(answer: Option<Result<bool, RedisError>>) -> bool {
    match answer {
        Some(Ok(announce)) => announce,
        Some(Err(e)) => {
            tracing::debug!(error = %e, "presence not shared through Redis");
            true
        }
        None => true,
    }
}

/// Adds this node's entry; `true` if no other node had the user there.
async fn arrive_in_redis(shared: &Shared, room: &RoomName, user: &str) -> Option<Result<bool, RedisError>> {
    let mut commands = shared.commands.borrow().clone()?;
    let key = shared.keys.presence(room);
    let now = unix_ms();
    let answer = ::redis::pipe()
        .atomic()
        .cmd("ZRANGEBYSCORE").arg(&key).arg(now).arg("+inf")
        .cmd("ZADD").arg(&key).arg(expiry(shared)).arg(member(shared.node, user)).ignore()
        .cmd("PEXPIRE").arg(&key).arg(key_ttl_ms(shared)).ignore()
        .query_async::<(Vec<String>,)>(&mut commands)
        .await;
    Some(answer.map(|(before,)| !has_user(&before, user)))
}

/// Removes this node's entry; `true` if no node has the user there now.
async fn depart_in_redis(shared: &Shared, room: &RoomName, user: &str) -> Option<Result<bool, RedisError>> {
    let mut commands = shared.commands.borrow().clone()?;
    let key = shared.keys.presence(room);
    let answer = ::redis::pipe()
        .atomic()
        .cmd("ZREM").arg(&key).arg(member(shared.node, user)).ignore()
        .cmd("ZRANGEBYSCORE").arg(&key).arg(unix_ms()).arg("+inf")
        .query_async::<(Vec<String>,)>(&mut commands)
        .await;
    Some(answer.map(|(after,)| !has_user(&after, user)))
}

/// The heartbeat: every entry of this node gets a new expiry.
async fn renew(shared: &Shared, here: &Here) {
    let Some(mut commands) = shared.commands.borrow().clone() else { return };
    if here.is_empty() {
        return;
    }
    let expires = expiry(shared);
    let mut pipe = ::redis::pipe();
    for (room, users) in here {
        let key = shared.keys.presence(room);
        for user in users.values() {
            pipe.cmd("ZADD").arg(&key).arg(expires).arg(member(shared.node, user)).ignore();
        }
        pipe.cmd("PEXPIRE").arg(&key).arg(key_ttl_ms(shared)).ignore();
    }
    if let Err(e) = pipe.query_async::<()>(&mut commands).await {
        tracing::debug!(error = %e, "could not renew presence in Redis");
    }
}

/// Removes expired entries (nodes that died) of the rooms this node
/// serves, announcing offline the users it removed who are online nowhere.
async fn prune_expired(shared: &Shared, here: &Here) {
    let Some(mut commands) = shared.commands.borrow().clone() else { return };
    let mut rooms: HashSet<RoomName> = shared.rooms.lock().expect("followed rooms").iter().cloned().collect();
    rooms.extend(here.keys().cloned());
    for room in rooms {
        let local = here.get(&room);
        if let Err(e) = prune_room(shared, &mut commands, &room, local).await {
            tracing::debug!(room = %room, error = %e, "could not prune presence in Redis");
            return;
        }
    }
}

async fn prune_room(
    shared: &Shared,
    commands: &mut MultiplexedConnection,
    room: &RoomName,
    local: Option<&HashMap<String, String>>,
) -> Result<(), RedisError> {
    let key = shared.keys.presence(room);
    let now = unix_ms();
    let expired: Vec<String> = ::redis::cmd("ZRANGEBYSCORE").arg(&key).arg("-inf").arg(format!("({now}")).query_async(commands).await?;
    let mut resynced = false;
    for gone in expired {
        let removed: u32 = ::redis::cmd("ZREM").arg(&key).arg(&gone).query_async(commands).await?;
        let Some(user) = user_of(&gone).filter(|_| removed > 0) else { continue };
        if !resynced {
            // Its node died, maybe between storing an event and publishing
            // it: every node's connections re-read the room from the store.
            shared.publish(room, RoomEvent::resync());
            resynced = true;
        }
        if local.is_some_and(|users| users.contains_key(&user.to_lowercase())) {
            continue;
        }
        let live: Vec<String> = ::redis::cmd("ZRANGEBYSCORE").arg(&key).arg(now).arg("+inf").query_async(commands).await?;
        if !has_user(&live, user) {
            tracing::info!(room = %room, user, "a user's node stopped renewing presence: announced offline");
            let event = ServerEvent::Presence { room: room.to_string(), user: user.to_string(), online: false };
            shared.publish(room, RoomEvent::new(&event, None, Some(user.to_lowercase())));
        }
    }
    Ok(())
}

fn member(node: u64, user: &str) -> String {
    format!("{node:x}{SEPARATOR}{user}")
}

fn user_of(member: &str) -> Option<&str> {
    member.split_once(SEPARATOR).map(|(_, user)| user)
}

fn has_user(members: &[String], user: &str) -> bool {
    let key = user.to_lowercase();
    members.iter().filter_map(|m| user_of(m)).any(|u| u.to_lowercase() == key)
}

fn expiry(shared: &Shared) -> u64 {
    unix_ms() + u64::try_from(shared.timings.presence_ttl.as_millis()).unwrap_or(u64::MAX / 2)
}

/// The whole set outlives its entries a while, then goes (every node gone).
fn key_ttl_ms(shared: &Shared) -> u64 {
    u64::try_from(shared.timings.presence_ttl.as_millis() * 2).unwrap_or(u64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_name_their_node_and_user_and_users_match_case_insensitively() {
        let ann = member(0xab, "Ann");
        assert_eq!(ann, "ab\u{1f}Ann");
        assert_eq!(user_of(&ann), Some("Ann"));
        assert!(has_user(std::slice::from_ref(&ann), "ann"));
        assert!(has_user(&[member(1, "Zoë")], "ZOË"));
        assert!(!has_user(&[ann], "bob"));
        assert_eq!(user_of("no separator"), None);
    }
}
