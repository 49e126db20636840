//! Group commit: every `append` of a [`PgStore`](super::PgStore) goes
//! through its one committer task, which stores whatever batches are
//! queued, of any number of rooms, in ONE transaction with a fixed number
//! of round trips:
//! 1. lock every room row involved, in one statement and in one fixed
//!    order (by name: two nodes locking overlapping sets never deadlock).
//!    Every appender of a room, on any node, queues on its row, so seqs
//!    are gap-free and seq n+1 commits only after seq n;
//! 2. look up, together (pipelined), for all rooms at once, the window's
//!    posts that the batches' `client_id`s might repeat and the messages
//!    their edits and deletes name;
//! 3. plan each room in memory (`plan::Batch`, the reference backend's
//!    rules; several batches of one room in the order they were queued);
//! 4. write all rooms' rows (pipelined, one statement of each kind over
//!    `UNNEST` with a room column) and every room's counters; then
//!    COMMIT. Only then does any caller hear back.
//!
//! So a node with many rooms each writing a little pays one transaction
//! (one fsync) per group, not one per room. A batch for a room that does
//! not exist answers `RoomNotFound` to its caller only; a database
//! failure answers `Unavailable` to every caller of the group. Each caller
//! hears back within [`OPERATION_TIMEOUT`] of its call, queueing included:
//! a group runs until the earliest deadline among its batches, and a
//! batch whose caller has given up (or whose time is up) before its group
//! starts is not stored.

use std::collections::HashMap;

use deadpool_postgres::{GenericClient, Object, Pool};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::messages::{LOCK_ROOMS, MESSAGES_BY_ID, ROOM_COLUMN, SENT_IN_WINDOW, counters_of, message_of, write};
use super::plan::{Batch, Counters, MessageNow, Writes};
use super::{OPERATION_TIMEOUT, db_error, rows, run_until, to_db};
use crate::model::{NewEvent, RoomName, now_rfc3339};
use crate::store::{Appended, StoreError};

/// What one append answers.
type Answers = Result<Vec<Result<Appended, StoreError>>, StoreError>;

/// Batches waiting for the committer, at most (then `append` waits, within
/// its deadline).
const QUEUE_LENGTH: usize = 4_096;
/// Batches stored in one transaction, at most.
const GROUP_SIZE: usize = 512;
/// How much later than the committer a caller gives up waiting (only if
/// the committer itself is stuck): the committer's own deadline, which
/// closes the connection, answers first.
const GRACE: std::time::Duration = std::time::Duration::from_millis(250);
const WHAT: &str = "store a batch";

/// One append waiting for its group.
struct Job {
    room: RoomName,
    batch: Vec<NewEvent>,
    deadline: Instant,
    reply: oneshot::Sender<Answers>,
}

/// The way to a store's committer task; the task ends when this is
/// dropped (with the store).
pub(super) struct Queue(mpsc::Sender<Job>);

/// Starts the committer task of a store on `pool`.
pub(super) fn start(pool: Pool) -> Queue {
    let (sender, receiver) = mpsc::channel(QUEUE_LENGTH);
    tokio::spawn(committer(pool, receiver));
    Queue(sender)
}

impl Queue {
    /// Queues `batch` for `room` and waits for its group to commit (or
    /// fail), within [`OPERATION_TIMEOUT`].
    pub(super) async fn append(&self, room: &RoomName, batch: Vec<NewEvent>) -> Answers {
        let deadline = Instant::now() + OPERATION_TIMEOUT;
        let (reply, answer) = oneshot::channel();
        let job = Job { room: room.clone(), batch, deadline, reply };
        let waited = tokio::time::timeout_at(deadline + GRACE, async {
            self.0.send(job).await.map_err(|_| StoreError::Unavailable("the store's committer has stopped".into()))?;
            answer.await.map_err(|_| {
                StoreError::Unavailable(format!("PostgreSQL did not answer within {} s ({WHAT})", OPERATION_TIMEOUT.as_secs()))
            })?
        })
        .await;
        waited.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!("PostgreSQL did not answer within {} s ({WHAT})", OPERATION_TIMEOUT.as_secs())))
        })
    }
}

/// Takes everything queued, stores it as one group, answers, and again,
/// until the store is dropped.
async fn committer(pool: Pool, mut queue: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(GROUP_SIZE);
    while queue.recv_many(&mut jobs, GROUP_SIZE).await > 0 {
        let now = Instant::now();
        // Its caller heard `Unavailable` already, or went away: not stored.
        jobs.retain(|job| job.deadline > now && !job.reply.is_closed());
        if !jobs.is_empty() {
            commit_group(&pool, std::mem::take(&mut jobs)).await;
        }
        jobs.clear();
    }
}

/// Stores `jobs` in one transaction and answers each.
async fn commit_group(pool: &Pool, jobs: Vec<Job>) {
    let deadline = jobs.iter().map(|job| job.deadline).min().expect("a group has a batch");
    let mut replies = Vec::with_capacity(jobs.len());
    let mut work = Vec::with_capacity(jobs.len());
    for job in jobs {
        replies.push(job.reply);
        work.push((job.room, job.batch));
    }
    let ts = now_rfc3339();
    match run_until(pool, deadline, OPERATION_TIMEOUT, WHAT, async |client| store_group(client, work, &ts).await).await {
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
        Err(failed) => {
            let reason = match failed {
                StoreError::Unavailable(reason) => reason,
                other => other.to_string(),
            };
            for reply in replies {
                let _ = reply.send(Err(StoreError::Unavailable(reason.clone())));
            }
        }
    }
}

/// The transaction of one group: each batch's answers, in the order of
/// `work`.
async fn store_group(client: &mut Object, work: Vec<(RoomName, Vec<NewEvent>)>, ts: &str) -> Result<Vec<Answers>, StoreError> {
    let tx = client.transaction().await.map_err(|e| db_error(WHAT, e))?;
    let mut names: Vec<&str> = work.iter().map(|(room, _)| room.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let locked = rows(&tx, "lock the rooms", LOCK_ROOMS, &[&names]).await?;
    let counters: HashMap<String, Counters> = locked.iter().map(|row| (row.get(0), counters_of(row, 1))).collect();
    let mut known = known_messages(&tx, &counters, &work).await?;

    // Plan each room, its batches in the order they came.
    let mut plans: HashMap<String, Batch> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut answers = Vec::with_capacity(work.len());
    for (room, batch) in work {
        let Some(&room_counters) = counters.get(room.as_str()) else {
            answers.push(Err(StoreError::RoomNotFound(room.to_string())));
            continue;
        };
        let plan = plans.entry(room.to_string()).or_insert_with(|| {
            order.push(room.to_string());
            Batch::new(room.as_str(), room_counters, known.remove(room.as_str()).unwrap_or_default())
        });
        answers.push(Ok(batch.into_iter().map(|new| plan.apply_new(new, ts)).collect()));
    }
    let writes: Vec<(String, Writes)> = order
        .into_iter()
        .map(|room| {
            let plan = plans.remove(&room).expect("planned");
            (room, plan.finish())
        })
        .collect();
    let writes: Vec<(&str, &Writes)> = writes.iter().map(|(room, w)| (room.as_str(), w)).collect();
    write(&tx, &writes).await?;
    tx.commit().await.map_err(|e| db_error(WHAT, e))?;
    Ok(answers)
}

/// For every locked room of the group, the messages its batches may need:
/// the window's posts their `client_id`s might repeat, and the messages
/// their edits and deletes name (two queries for all rooms, pipelined).
async fn known_messages(
    client: &impl GenericClient,
    counters: &HashMap<String, Counters>,
    work: &[(RoomName, Vec<NewEvent>)],
) -> Result<HashMap<String, Vec<MessageNow>>, StoreError> {
    let (mut sent_rooms, mut since, mut keys, mut client_ids) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut named_rooms, mut targets) = (Vec::new(), Vec::new());
    for (room, batch) in work {
        let Some(room_counters) = counters.get(room.as_str()) else {
            continue;
        };
        for event in batch {
            match event {
                NewEvent::Post { user, client_id, thread, .. } => {
                    sent_rooms.push(room.as_str());
                    since.push(to_db(room_counters.window_start()));
                    keys.push(user.key());
                    client_ids.push(client_id.as_str());
                    if let Some(parent) = thread {
                        named_rooms.push(room.as_str());
                        targets.push(to_db(*parent));
                    }
                }
                NewEvent::Edit { id, .. } | NewEvent::Delete { id, .. } | NewEvent::React { id, .. } => {
                    named_rooms.push(room.as_str());
                    targets.push(to_db(*id));
                }
                NewEvent::Member { .. } => {}
            }
        }
    }
    let sent = async {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        rows(client, "look for repeated sends", SENT_IN_WINDOW, &[&sent_rooms, &since, &keys, &client_ids]).await
    };
    let named = async {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        rows(client, "read the messages a batch changes", MESSAGES_BY_ID, &[&named_rooms, &targets]).await
    };
    let (sent, named) = tokio::try_join!(sent, named)?;
    let mut known: HashMap<String, Vec<MessageNow>> = HashMap::new();
    for row in sent.iter().chain(named.iter()) {
        known.entry(row.get(ROOM_COLUMN)).or_default().push(message_of(row));
    }
    Ok(known)
}
