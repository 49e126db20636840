//! [`SearchStore`] over [`MemoryStore`]: every visible room's messages as
//! they are now, sorted newest first, each confirmed by the matching rule
//! — the contract in its plainest form, with no index.

use async_trait::async_trait;

use super::messages::messages_now;
use super::{MemoryStore, lock};
use crate::model::Message;
use crate::store::search::{PageBuilder, SearchKey, SearchPage, SearchQuery, SearchStore};
use crate::store::StoreError;

impl MemoryStore {
    /// Whether a reader who is a member of `member_of` may see `room`.
    /// Every room is public until rooms can be private.
    fn visible(&self, _room: &str, _member_of: &[String]) -> bool {
        true
    }
}

#[async_trait]
impl SearchStore for MemoryStore {
    async fn search(&self, query: &SearchQuery, member_of: &[String]) -> Result<SearchPage, StoreError> {
        let mut candidates: Vec<(SearchKey, Message)> = {
            let rooms = lock(&self.rooms);
            rooms
                .iter()
                .filter(|(room, _)| self.visible(room, member_of))
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
