//! Private rooms and direct messages in PostgreSQL: `rooms.private` and
//! `rooms.dm_members` say what a room is (fixed when it is created);
//! `room_members` holds a private room's members, by lower-cased key.

use super::{PgStore, db_error, execute, rows};
use crate::model::{RoomName, Username, now_rfc3339};
use crate::store::{PrivateRoom, RoomAccess, RoomInfo, StoreError};

const CREATE_PRIVATE_ROOM: &str = "INSERT INTO rooms (name, created_by, private, dm_members) VALUES ($1, $2, true, $3)
    ON CONFLICT (name) DO NOTHING";
const ADD_MEMBERS: &str = "INSERT INTO room_members (room, user_key, username, added_by, added_at)
    SELECT $1, k, n, $4, $5 FROM unnest($2::text[], $3::text[]) AS m (k, n)
    WHERE EXISTS (SELECT 1 FROM rooms WHERE name = $1 AND private)
    ON CONFLICT (room, user_key) DO NOTHING";
const REMOVE_MEMBER: &str = "DELETE FROM room_members WHERE room = $1 AND user_key = $2";
const ROOM_ACCESS: &str = "SELECT r.private, r.created_by, r.dm_members IS NOT NULL, m.user_key, m.username
    FROM rooms r LEFT JOIN room_members m ON m.room = r.name WHERE r.name = $1";
const ROOMS_OF: &str = "SELECT r.name, r.dm_members IS NOT NULL,
        array(SELECT x.username FROM room_members x WHERE x.room = r.name ORDER BY x.user_key)
    FROM room_members m JOIN rooms r ON r.name = m.room WHERE m.user_key = $1 ORDER BY r.name";

impl PgStore {
    pub(super) async fn insert_private_room(&self, room: &RoomName, creator: &Username, kind: PrivateRoom<'_>) -> Result<RoomInfo, StoreError> {
        const WHAT: &str = "create a private room";
        let access = RoomAccess::new_private(creator, kind);
        let dm_members: Option<Vec<&str>> = access.dm.then(|| access.members.keys().map(String::as_str).collect());
        let keys: Vec<&str> = access.members.keys().map(String::as_str).collect();
        let names: Vec<&str> = access.members.values().map(String::as_str).collect();
        let now = now_rfc3339();
        self.run(WHAT, async |client| {
            let tx = client.transaction().await.map_err(|e| db_error(WHAT, e))?;
            if execute(&tx, WHAT, CREATE_PRIVATE_ROOM, &[&room.as_str(), &creator.as_str(), &dm_members]).await? == 0 {
                return Err(StoreError::RoomExists(room.to_string()));
            }
            execute(&tx, WHAT, ADD_MEMBERS, &[&room.as_str(), &keys, &names, &creator.as_str(), &now]).await?;
            tx.commit().await.map_err(|e| db_error(WHAT, e))
        })
        .await?;
        Ok(access.info(room.as_str()))
    }

    pub(super) async fn read_access(&self, room: &RoomName) -> Result<Option<RoomAccess>, StoreError> {
        const WHAT: &str = "read who may read a room";
        let found = self.run(WHAT, async |client| rows(&*client, WHAT, ROOM_ACCESS, &[&room.as_str()]).await).await?;
        let Some(first) = found.first() else { return Ok(None) };
        let mut access = RoomAccess { private: first.get(0), created_by: first.get(1), dm: first.get(2), ..RoomAccess::default() };
        for row in &found {
            if let (Some(key), Some(name)) = (row.get::<_, Option<String>>(3), row.get::<_, Option<String>>(4)) {
                access.members.insert(key, name);
            }
        }
        Ok(Some(access))
    }

    pub(super) async fn write_member(&self, room: &RoomName, member: &Username, by: &str, added: bool) -> Result<bool, StoreError> {
        const WHAT: &str = "change a room's members";
        let key = member.key();
        let changed = if added {
            let now = now_rfc3339();
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                [&room.as_str(), &vec![key.as_str()], &vec![member.as_str()], &by, &now];
            self.run_statement(WHAT, ADD_MEMBERS, &params).await?
        } else {
            self.run_statement(WHAT, REMOVE_MEMBER, &[&room.as_str(), &key]).await?
        };
        Ok(changed > 0)
    }

    pub(super) async fn rooms_of(&self, user_key: &str) -> Result<Vec<RoomInfo>, StoreError> {
        const WHAT: &str = "list a user's private rooms";
        let found = self.run(WHAT, async |client| rows(&*client, WHAT, ROOMS_OF, &[&user_key]).await).await?;
        Ok(found
            .iter()
            .map(|row| {
                let dm: bool = row.get(1);
                let members: Vec<String> = if dm { row.get(2) } else { Vec::new() };
                RoomInfo { name: row.get(0), private: true, dm, members }
            })
            .collect())
    }
}
