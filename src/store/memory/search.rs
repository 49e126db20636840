//! [`SearchStore`] over [`MemoryStore`]: every visible room's messages as
//! they are now, sorted newest first, each confirmed by the matching rule
//! — the contract in its plainest form, with no index.

use async_trait::async_trait;

use super::messages::messages_now;
use super::{MemoryStore, lock};
use crate::model::Message;
use crate::store::search::{PageBuilder, SearchKey, SearchPage, SearchQuery, SearchStore};
use crate::store::StoreError;

#[async_trait]
impl SearchStore for MemoryStore {
    async fn search(&self, query: &SearchQuery, member_of: &[String]) -> Result<SearchPage, StoreError> {
        let mut candidates: Vec<(SearchKey, Message)> = {
            let private = lock(&self.private_rooms).keys().cloned().collect::<Vec<String>>();
            let visible = |room: &String| !private.contains(room) || member_of.contains(room);
            let rooms = lock(&self.rooms);
            rooms
                .iter()
                .filter(|(room, _)| visible(room))
                .flat_map(|(_, events)| messages_now(events))
                .map(|m| (SearchKey::of(&m), m))
                .collect()
        };
        candidates.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        let mut page = PageBuilder::new(query);
        for (_, message) in &candidates {
            if !page.offer(message) {
                break;
            }
        }
        Ok(page.finish())
    }
}
