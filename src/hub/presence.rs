//! Who is in a room, counted per connection so that a user with several
//! tabs goes offline only when the last one leaves.

use std::collections::HashMap;

#[derive(Default)]
pub struct Presence {
    /// lower-cased name → (name as shown, open connections)
    users: HashMap<String, (String, usize)>,
}

impl Presence {
    /// Counts one more connection; true when it is the user's first.
    pub fn enter(&mut self, user: &str) -> bool {
        let entry = self.users.entry(user.to_lowercase()).or_insert_with(|| (user.to_string(), 0));
        entry.1 += 1;
        entry.1 == 1
    }

    /// Counts one connection fewer; true when it was the user's last.
    pub fn exit(&mut self, user: &str) -> bool {
        let key = user.to_lowercase();
        let Some(entry) = self.users.get_mut(&key) else { return false };
        entry.1 -= 1;
        if entry.1 == 0 {
            self.users.remove(&key);
            return true;
        }
        false
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.users.values().map(|(n, _)| n.clone()).collect();
        names.sort_by_key(|n| n.to_lowercase());
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_tabs_go_offline_with_the_last() {
        let mut p = Presence::default();
        assert!(p.enter("Ann"));
        assert!(!p.enter("ann"));
        assert_eq!(p.names(), vec!["Ann"]);
        assert!(!p.exit("ann"));
        assert!(p.exit("Ann"));
        assert!(p.names().is_empty());
        assert!(!p.exit("Ann"));
    }
}
