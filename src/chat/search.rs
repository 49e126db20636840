//! Message search: the query checked (`q`, `room`, `limit`, `before`),
//! then asked of the store for the rooms the actor may see (public ones,
//! and the private rooms and DMs they are a member of).

use super::{Actor, Chat};
use crate::error::ChatError;
use crate::model::RoomName;
use crate::store::search::text::parse_terms;
use crate::store::search::{DEFAULT_RESULTS, MAX_QUERY_CHARS, MAX_RESULTS, SearchKey};
use crate::store::{SearchPage, SearchQuery};

/// A search as a client asks it, unchecked.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub q: Option<String>,
    pub room: Option<String>,
    pub limit: Option<usize>,
    pub before: Option<String>,
}

impl Chat {
    /// A page of the messages the actor may see that match `request.q`,
    /// newest first.
    pub async fn search(&self, actor: &Actor, request: SearchRequest) -> Result<SearchPage, ChatError> {
        let query = checked_query(&request)?;
        if let Some(room) = &query.room {
            self.readable(actor, room).await?;
        }
        // Guests are never members, whatever their name.
        let member_of: Vec<String> = match actor.session.guest {
            true => Vec::new(),
            false => self.hub.private_rooms_of(&actor.session.user).await?.into_iter().map(|r| r.name).collect(),
        };
        self.hub.search(&query, &member_of).await
    }
}

/// The request as a [`SearchQuery`], or a `bad_request` that says what is
/// wrong with it.
fn checked_query(request: &SearchRequest) -> Result<SearchQuery, ChatError> {
    let bad = |why: &str| ChatError::BadRequest(why.to_string());
    let q = request.q.as_deref().unwrap_or("");
    if q.trim().is_empty() {
        return Err(bad("q (what to search for) is required"));
    }
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(bad("q has at most 200 characters"));
    }
    let terms = parse_terms(q);
    if terms.is_empty() {
        return Err(bad("q has nothing to search for"));
    }
    let limit = request.limit.unwrap_or(DEFAULT_RESULTS);
    if !(1..=MAX_RESULTS).contains(&limit) {
        return Err(bad("limit must be 1 to 100"));
    }
    let room = request.room.as_deref().filter(|r| !r.is_empty()).map(RoomName::parse).transpose()?;
    let before = match request.before.as_deref().filter(|b| !b.is_empty()) {
        Some(cursor) => Some(SearchKey::parse_cursor(cursor).ok_or_else(|| bad("before must be a next_before this server gave"))?),
        None => None,
    };
    Ok(SearchQuery { terms, room, before, limit })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(q: &str) -> SearchRequest {
        SearchRequest { q: Some(q.to_string()), ..SearchRequest::default() }
    }

    #[test]
    fn queries_are_checked() {
        assert_eq!(checked_query(&request("go")).unwrap().limit, DEFAULT_RESULTS);
        for bad in [request(""), request("   "), request("\"\""), request(&"x".repeat(201)), SearchRequest::default()] {
            assert_eq!(checked_query(&bad).unwrap_err().code(), "bad_request", "{bad:?}");
        }
        assert!(checked_query(&request(&"é".repeat(200))).is_ok());
        for limit in [0, 101] {
            let err = checked_query(&SearchRequest { limit: Some(limit), ..request("go") }).unwrap_err();
            assert_eq!(err.code(), "bad_request");
        }
        let err = checked_query(&SearchRequest { before: Some("nope".into()), ..request("go") }).unwrap_err();
        assert_eq!(err.code(), "bad_request");
        let err = checked_query(&SearchRequest { room: Some("Bad Room".into()), ..request("go") }).unwrap_err();
        assert_eq!(err.code(), "invalid_room_name");
    }
}
