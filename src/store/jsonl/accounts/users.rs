//! `users.jsonl`: one line per account, `{"username","password_hash",
//! "created_at"}`, never rewritten. Names are looked up by their
//! lower-cased form and by their look-alike skeletons, an index built at
//! load and never stored.

use std::collections::HashMap;

use async_trait::async_trait;

use super::JsonlAccounts;
use super::journal::Replay;
use crate::model::{Username, name_skeletons};
use crate::store::{StoreError, UserRecord, UserStore};

#[derive(Default)]
pub(super) struct Users {
    /// lower-cased name → account
    by_key: HashMap<String, UserRecord>,
    /// name skeleton → lower-cased name of the (first) account that has it;
    /// derived at load, never stored
    look_alikes: HashMap<String, String>,
}

impl Users {
    /// Every account, oldest first (by `created_at`, then name).
    pub(super) fn oldest_first(&self) -> Vec<UserRecord> {
        let mut users: Vec<UserRecord> = self.by_key.values().cloned().collect();
        users.sort_by(|a, b| (&a.created_at, &a.username).cmp(&(&b.created_at, &b.username)));
        users
    }

    /// An account whose name shares a skeleton with `name`.
    fn look_alike(&self, name: &str) -> Option<&UserRecord> {
        name_skeletons(name).iter().find_map(|k| self.look_alikes.get(k)).and_then(|key| self.by_key.get(key))
    }
}

impl Replay for Users {
    type Record = UserRecord;

    /// Indexes the account under its name's skeletons (an older account
    /// keeps a skeleton it shares with a later one: both still load and
    /// log in).
    fn apply(&mut self, user: UserRecord) {
        let key = user.username.to_lowercase();
        for skeleton in name_skeletons(&user.username) {
            self.look_alikes.entry(skeleton).or_insert_with(|| key.clone());
        }
        self.by_key.insert(key, user);
    }

    fn compacted(&self) -> Vec<UserRecord> {
        self.by_key.values().cloned().collect()
    }
}

#[async_trait]
impl UserStore for JsonlAccounts {
    async fn create_user(&self, user: UserRecord) -> Result<(), StoreError> {
        self.users
            .change(move |users| {
                let taken = users.by_key.contains_key(&user.username.to_lowercase()) || users.look_alike(&user.username).is_some();
                if taken {
                    return Err(StoreError::NameTaken(user.username));
                }
                Ok((vec![user], ()))
            })
            .await
    }

    async fn find_user(&self, user_key: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.users.read(|users| users.by_key.get(user_key).cloned()))
    }

    async fn find_look_alike(&self, user: &Username) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.users.read(|users| users.look_alike(user.as_str()).cloned()))
    }
}
