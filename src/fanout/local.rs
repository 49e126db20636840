//! The fan-out within one process: a tokio broadcast channel per room,
//! made on first subscribe and forgotten when released.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::{Fanout, ROOM_CHANNEL_CAPACITY, RoomEvent, SessionEnd, USER_CHANNEL_CAPACITY, UserEvent};
use crate::model::RoomName;

#[derive(Default)]
pub struct LocalFanout {
    rooms: Mutex<HashMap<RoomName, broadcast::Sender<Arc<RoomEvent>>>>,
    /// Per subscriber; a channel nobody receives is dropped at the next publish.
    users: Mutex<HashMap<String, broadcast::Sender<Arc<UserEvent>>>>,
    /// Sessions ended (one process: only this node hears them).
    session_ends: std::sync::OnceLock<broadcast::Sender<SessionEnd>>,
}

impl LocalFanout {
    fn session_ends(&self) -> &broadcast::Sender<SessionEnd> {
        self.session_ends.get_or_init(|| broadcast::channel(USER_CHANNEL_CAPACITY * 128).0)
    }
}

impl Fanout for LocalFanout {
    fn publish(&self, room: &RoomName, make: &dyn Fn() -> Arc<RoomEvent>) {
        let sender = self.rooms.lock().expect("fan-out rooms").get(room).filter(|s| s.receiver_count() > 0).cloned();
        if let Some(sender) = sender {
            // Receivers that left meanwhile are fine: nobody to tell.
            let _ = sender.send(make());
        }
    }

    fn subscribe(&self, room: &RoomName) -> broadcast::Receiver<Arc<RoomEvent>> {
        let mut rooms = self.rooms.lock().expect("fan-out rooms");
        rooms.entry(room.clone()).or_insert_with(|| broadcast::channel(ROOM_CHANNEL_CAPACITY).0).subscribe()
    }

    fn has_subscribers(&self, room: &RoomName) -> bool {
        self.rooms.lock().expect("fan-out rooms").get(room).is_some_and(|s| s.receiver_count() > 0)
    }

    fn publish_to_user(&self, subscriber: &str, event: Arc<UserEvent>) {
        let mut users = self.users.lock().expect("fan-out users");
        let Some(sender) = users.get(subscriber) else { return };
        if sender.send(event).is_err() {
            users.remove(subscriber);
        }
    }

    fn subscribe_user(&self, subscriber: &str) -> broadcast::Receiver<Arc<UserEvent>> {
        let mut users = self.users.lock().expect("fan-out users");
        users.entry(subscriber.to_string()).or_insert_with(|| broadcast::channel(USER_CHANNEL_CAPACITY).0).subscribe()
    }

    fn publish_session_end(&self, end: SessionEnd) {
        let _ = self.session_ends().send(end);
    }

    fn subscribe_session_ends(&self) -> broadcast::Receiver<SessionEnd> {
        self.session_ends().subscribe()
    }

    fn release(&self, room: &RoomName) -> bool {
        let mut rooms = self.rooms.lock().expect("fan-out rooms");
        if rooms.get(room).is_some_and(|s| s.receiver_count() > 0) {
            return false;
        }
        rooms.remove(room);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerEvent;

    fn typing(user: &str) -> Arc<RoomEvent> {
        RoomEvent::new(&ServerEvent::Typing { room: "general".into(), user: user.into() }, None, None)
    }

    #[test]
    fn subscribers_get_what_is_published_and_nothing_is_built_for_none() {
        let fanout = LocalFanout::default();
        let room = RoomName::parse("general").unwrap();
        fanout.publish(&room, &|| panic!("built for nobody"));
        let mut rx = fanout.subscribe(&room);
        assert!(fanout.has_subscribers(&room));
        assert!(!fanout.release(&room), "released with a subscriber");
        fanout.publish(&room, &|| typing("ann"));
        assert!(rx.try_recv().unwrap().frame.contains("ann"));
        drop(rx);
        assert!(fanout.release(&room));
        assert!(!fanout.has_subscribers(&room));
    }
}
