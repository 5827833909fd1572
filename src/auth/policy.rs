//! [`RoomPolicy`]: which rooms a principal may use, from the token's `rooms`
//! claim. Exact names are a hash lookup; `prefix*` patterns a short scan.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

/// The rooms a principal may join and publish to.
///
/// Built from patterns: an exact room name, or a prefix ending in `*`
/// (`"game-*"` matches `game-1` and `game-`; `"*"` matches every room). A
/// `*` anywhere but at the end is an ordinary character. An empty pattern
/// list allows no room. Cloning is a reference-count bump.
#[derive(Clone)]
pub struct RoomPolicy(Option<Arc<Patterns>>);

/// `None` in [`RoomPolicy`] is "every room", so the common unrestricted
/// case allocates nothing.
struct Patterns {
    exact: HashSet<Box<str>>,
    prefixes: Box<[Box<str>]>,
}

impl RoomPolicy {
    /// Every room is allowed (a token without a `rooms` claim, or dev mode).
    pub fn any() -> RoomPolicy {
        RoomPolicy(None)
    }

    /// A policy from `rooms` patterns; see the type's docs for their syntax.
    pub fn from_patterns<I, S>(patterns: I) -> RoomPolicy
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut exact = HashSet::new();
        let mut prefixes = Vec::new();
        for p in patterns {
            match p.as_ref().strip_suffix('*') {
                Some("") => return RoomPolicy::any(),
                Some(prefix) => prefixes.push(Box::from(prefix)),
                None => {
                    exact.insert(Box::from(p.as_ref()));
                }
            }
        }
        RoomPolicy(Some(Arc::new(Patterns {
            exact,
            prefixes: prefixes.into_boxed_slice(),
        })))
    }

    /// Whether `room` may be used under this policy.
    pub fn allows(&self, room: &str) -> bool {
        match &self.0 {
            None => true,
            Some(p) => p.exact.contains(room) || p.prefixes.iter().any(|pre| room.starts_with(&**pre)),
        }
    }

    /// Whether every room is allowed, so callers can skip per-room checks.
    #[cfg(test)]
    pub fn allows_every_room(&self) -> bool {
        self.0.is_none()
    }
}

impl fmt::Debug for RoomPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("RoomPolicy(*)"),
            Some(p) => {
                let prefixes = p.prefixes.iter().map(|pre| format!("{pre}*"));
                f.debug_set().entries(p.exact.iter()).entries(prefixes).finish()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_match_only_themselves() {
        let p = RoomPolicy::from_patterns(["lobby", "game-1"]);
        assert!(p.allows("lobby") && p.allows("game-1"));
        assert!(!p.allows("lobby2") && !p.allows("lob") && !p.allows("game-10") && !p.allows(""));
    }

    #[test]
    fn a_trailing_star_is_a_prefix() {
        let p = RoomPolicy::from_patterns(["game-*"]);
        assert!(p.allows("game-1") && p.allows("game-") && p.allows("game-abc-def"));
        assert!(!p.allows("game") && !p.allows("Game-1") && !p.allows("xgame-1"));
    }

    #[test]
    fn a_star_elsewhere_is_literal() {
        let p = RoomPolicy::from_patterns(["a*b"]);
        assert!(p.allows("a*b"));
        assert!(!p.allows("axb") && !p.allows("a"));
    }

    #[test]
    fn a_lone_star_allows_everything() {
        let p = RoomPolicy::from_patterns(["lobby", "*"]);
        assert!(p.allows_every_room());
        assert!(p.allows("anything") && p.allows(""));
    }

    #[test]
    fn an_empty_list_allows_nothing() {
        let p = RoomPolicy::from_patterns(Vec::<String>::new());
        assert!(!p.allows_every_room());
        assert!(!p.allows("lobby") && !p.allows(""));
    }

    #[test]
    fn any_allows_everything() {
        let p = RoomPolicy::any();
        assert!(p.allows_every_room() && p.allows("lobby") && p.allows(""));
    }

    #[test]
    fn mixed_patterns() {
        let p = RoomPolicy::from_patterns(["lobby", "game-*", "chat-*"]);
        assert!(p.allows("lobby") && p.allows("game-7") && p.allows("chat-"));
        assert!(!p.allows("admin"));
        assert_eq!(format!("{:?}", RoomPolicy::any()), "RoomPolicy(*)");
    }
}
