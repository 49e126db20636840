//! Messages: send, edit, delete, history and the event log; opening a room
//! for a socket (subscribe, then read what the client lacks).

use std::sync::Arc;

use tokio::sync::broadcast;

use super::{Actor, Chat};
use crate::error::ChatError;
use crate::fanout::RoomEvent;
use crate::model::{Message, NewEvent, RoomName, StoredEvent, validate_client_id, validate_text};
use crate::store::{Appended, HistoryQuery, MAX_PAGE};
use crate::telemetry;

/// Messages sent on opening a room without `after`.
const OPEN_HISTORY: usize = 50;

/// A page of a room's event log.
pub struct EventsPage {
    pub events: Vec<StoredEvent>,
    /// Where the next page starts (`after` for the next call).
    pub seq: u64,
    pub has_more: bool,
}

/// A room opened for a socket: its live events, and what to show first.
pub struct OpenedRoom {
    pub room: RoomName,
    pub live: broadcast::Receiver<Arc<RoomEvent>>,
    /// Without `after`: the latest messages as they are now (as posts);
    /// with it: every event after it, a page at most.
    pub history: Vec<StoredEvent>,
    pub has_more: bool,
    /// The seq the client is now at; live events continue after it.
    pub seq: u64,
}

impl Chat {
    /// Posts a message, or with `thread` a reply to that message (a repeat
    /// of a stored `client_id` is answered with the stored copy as the
    /// actor sees it, even over the send rate). A new message notifies
    /// whom it mentions (`notify_mentions`) and, a reply, the thread's
    /// other participants (`notify_thread`), each once. A refusal is
    /// counted by its code (`telemetry::send_rejected`).
    pub async fn send(&self, actor: &Actor, room: &str, text: &str, client_id: &str, thread: Option<u64>) -> Result<Appended, ChatError> {
        let sent = self.post(actor, room, text, client_id, thread).await;
        if let Err(err) = &sent {
            telemetry::send_rejected(err.code());
        }
        match sent? {
            Appended::Duplicate(message) => Ok(Appended::Duplicate(message.seen_by(&actor.session.user.key()))),
            new => Ok(new),
        }
    }

    async fn post(&self, actor: &Actor, room: &str, text: &str, client_id: &str, thread: Option<u64>) -> Result<Appended, ChatError> {
        let room = RoomName::parse(room)?;
        let access = self.readable(actor, &room).await?;
        let client_id = validate_client_id(client_id)?;
        let text = validate_text(text)?;
        let post = NewEvent::Post { user: actor.session.user.clone(), text, client_id, thread };
        let stored = self.hub.send_paced(&room, post, self.within_rate(actor)).await?;
        if let Appended::New(event) = &stored
            && let Some(message) = event.as_post()
        {
            let mut notified = self.notify_mentions(actor, &room, &access, message).await;
            if message.thread.is_some() {
                self.notify_thread(&room, &access, message, &mut notified).await;
            }
        }
        Ok(stored)
    }

    /// Changes the text of the actor's own message.
    pub async fn edit(&self, actor: &Actor, room: &str, id: u64, text: &str) -> Result<StoredEvent, ChatError> {
        let room = RoomName::parse(room)?;
        let edit = NewEvent::Edit { user: actor.session.user.clone(), id, text: validate_text(text)? };
        self.store_change(actor, &room, edit).await
    }

    /// Deletes the actor's own message.
    pub async fn delete(&self, actor: &Actor, room: &str, id: u64) -> Result<StoredEvent, ChatError> {
        let room = RoomName::parse(room)?;
        self.store_change(actor, &room, NewEvent::Delete { user: actor.session.user.clone(), id }).await
    }

    async fn store_change(&self, actor: &Actor, room: &RoomName, change: NewEvent) -> Result<StoredEvent, ChatError> {
        self.readable(actor, room).await?;
        match self.hub.send_paced(room, change, self.within_rate(actor)).await? {
            Appended::New(stored) => Ok(stored),
            Appended::Duplicate(_) => Err(ChatError::Internal("a change was answered as a repeated post".into())),
        }
    }

    /// A slice of a room's messages as they are now, as the actor sees
    /// them (their own reactions marked `me`).
    pub async fn history(&self, actor: &Actor, room: &str, query: HistoryQuery) -> Result<Vec<Message>, ChatError> {
        let room = RoomName::parse(room)?;
        self.readable(actor, &room).await?;
        let messages = self.hub.history(&room, HistoryQuery { limit: query.limit.min(MAX_PAGE), ..query }).await?;
        let reader = actor.session.user.key();
        Ok(messages.into_iter().map(|m| m.seen_by(&reader)).collect())
    }

    /// A page of a room's event log after `after`.
    pub async fn events(&self, actor: &Actor, room: &str, after: u64, limit: usize) -> Result<EventsPage, ChatError> {
        let room = RoomName::parse(room)?;
        self.readable(actor, &room).await?;
        self.events_page(&room, after, limit).await
    }

    /// A page of a room the caller has checked the actor may read.
    async fn events_page(&self, room: &RoomName, after: u64, limit: usize) -> Result<EventsPage, ChatError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let head = self.hub.last_seq(room).await?;
        let mut events = self.hub.events(room, after, limit + 1).await?;
        let has_more = events.len() > limit;
        events.truncate(limit);
        // Nothing after `after`: up to date, or ahead of a room whose data
        // was reset; either way, continue from the head.
        let seq = events.last().map_or(head.min(after), |e| e.seq);
        Ok(EventsPage { events, seq, has_more })
    }

    /// Opens a room for a socket: subscribes to its live events *first*,
    /// then reads what the client lacks, so nothing falls in between
    /// (what arrives twice is dropped by seq).
    pub async fn open_room(&self, actor: &Actor, room: &str, after: Option<u64>) -> Result<OpenedRoom, ChatError> {
        let room = RoomName::parse(room)?;
        self.readable(actor, &room).await?;
        let live = self.hub.subscribe(&room).await?;
        let (history, has_more, seq) = match after {
            Some(after) => {
                let page = self.events_page(&room, after, MAX_PAGE).await?;
                (page.events, page.has_more, page.seq)
            }
            None => {
                // The head first: what is stored after it comes live.
                let head = self.hub.last_seq(&room).await?;
                let query = HistoryQuery { before: Some(head + 1), ..HistoryQuery::latest(OPEN_HISTORY) };
                let messages = self.hub.history(&room, query).await?;
                let reader = actor.session.user.key();
                (messages.into_iter().map(|m| StoredEvent::post(m.seen_by(&reader))).collect(), false, head)
            }
        };
        Ok(OpenedRoom { room, live, history, has_more, seq })
    }
}
