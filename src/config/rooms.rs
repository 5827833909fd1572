//! Options per room: `[[rooms]]` sections of the TOML file, each naming a
//! pattern (the JWT `rooms` claim's syntax: an exact name, or a prefix
//! ending in `*`); the first section whose pattern matches a room gives its
//! options, and a room no section matches gets the flags' (`--history-size`,
//! `--history-ttl-secs`, `--presence`, `--join-leave`).
//!
//! ```toml
//! [[rooms]]
//! match = "chat:*"
//! history_size = 100        # messages kept per room (0 = no history)
//! history_ttl_secs = 600    # history expires this long after the last publish
//! presence = true           # members may ask who is in the room
//! join_leave = true         # members receive joined/left events
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::RoomPolicy;

use super::ConfigError;

/// Default of `--history-size`: rooms keep no history.
pub const DEFAULT_HISTORY_SIZE: usize = 0;
/// Default of `--history-ttl-secs`.
pub const DEFAULT_HISTORY_TTL_SECS: u64 = 300;
/// Most messages a room may keep.
pub const MAX_HISTORY_SIZE: usize = 1_000_000;

/// One `[[rooms]]` section as written (keys in snake_case, as documented;
/// kebab-case is accepted too, like the top-level keys).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoomSection {
    /// The rooms it applies to.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Messages kept per room; unset: `--history-size`.
    #[serde(default, alias = "history-size", skip_serializing_if = "Option::is_none")]
    pub history_size: Option<usize>,
    /// Seconds a room's history lives after its last publish; unset:
    /// `--history-ttl-secs`.
    #[serde(default, alias = "history-ttl-secs", skip_serializing_if = "Option::is_none")]
    pub history_ttl_secs: Option<u64>,
    /// Members may ask who is in the room; unset: `--presence`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<bool>,
    /// Members receive `joined`/`left` events; unset: `--join-leave`.
    #[serde(default, alias = "join-leave", skip_serializing_if = "Option::is_none")]
    pub join_leave: Option<bool>,
}

/// What a room is configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomOptions {
    /// Messages kept (0: no history, no offsets).
    pub history_size: usize,
    /// How long history lives after the room's last publish.
    pub history_ttl: Duration,
    /// Members may ask who is in the room.
    pub presence: bool,
    /// Members receive `joined`/`left` events.
    pub join_leave: bool,
}

impl RoomOptions {
    /// Whether the room keeps history (and numbers its messages).
    pub fn has_history(&self) -> bool {
        self.history_size > 0
    }

    /// Whether the room's users are tracked (for queries or events).
    pub fn tracks_presence(&self) -> bool {
        self.presence || self.join_leave
    }
}

/// Every room's options: the sections in order, then the default.
#[derive(Debug, Clone)]
pub struct RoomRules {
    sections: Vec<(RoomPolicy, RoomOptions)>,
    default: RoomOptions,
    /// Whether any room can have history (so most lookups are skipped).
    any_history: bool,
    /// Whether any room can track presence.
    any_presence: bool,
    /// As written, for `--print-config`.
    written: Vec<RoomSection>,
}

impl RoomRules {
    /// Resolves the sections against the flags' defaults.
    pub fn new(written: Vec<RoomSection>, default: RoomOptions) -> Result<RoomRules, ConfigError> {
        let mut sections = Vec::with_capacity(written.len());
        for (i, s) in written.iter().enumerate() {
            let at = format!("[[rooms]] section {} (match = {:?})", i + 1, s.pattern);
            let star = s.pattern.find('*');
            if s.pattern.is_empty() || star.is_some_and(|at| at + 1 != s.pattern.len()) {
                return Err(ConfigError(format!(
                    "{at}: a pattern is a room name, or a prefix ending in `*`"
                )));
            }
            let history_size = s.history_size.unwrap_or(default.history_size);
            if history_size > MAX_HISTORY_SIZE {
                return Err(ConfigError(format!(
                    "{at}: history_size must be at most {MAX_HISTORY_SIZE}"
                )));
            }
            let ttl = s.history_ttl_secs.map_or(default.history_ttl, Duration::from_secs);
            if history_size > 0 && ttl.is_zero() {
                return Err(ConfigError(format!("{at}: history_ttl_secs must be positive")));
            }
            sections.push((
                RoomPolicy::from_patterns([&s.pattern]),
                RoomOptions {
                    history_size,
                    history_ttl: ttl,
                    presence: s.presence.unwrap_or(default.presence),
                    join_leave: s.join_leave.unwrap_or(default.join_leave),
                },
            ));
        }
        let any_history = default.has_history() || sections.iter().any(|(_, o)| o.has_history());
        let any_presence = default.tracks_presence() || sections.iter().any(|(_, o)| o.tracks_presence());
        Ok(RoomRules {
            sections,
            default,
            any_history,
            any_presence,
            written,
        })
    }

    /// The options of `room`: the first section that matches, else the default.
    #[inline]
    pub fn options(&self, room: &str) -> RoomOptions {
        self.sections
            .iter()
            .find(|(pattern, _)| pattern.allows(room))
            .map_or(self.default, |(_, o)| *o)
    }

    /// Whether any room can have history.
    pub fn any_history(&self) -> bool {
        self.any_history
    }

    /// Whether `room` keeps history (no pattern is matched when no room can).
    #[inline]
    pub fn has_history(&self, room: &str) -> bool {
        self.any_history && self.options(room).has_history()
    }

    /// Whether `room`'s users are tracked (presence or join/leave events).
    #[inline]
    pub fn tracks_presence(&self, room: &str) -> bool {
        self.any_presence && self.options(room).tracks_presence()
    }

    /// Whether any room tracks presence.
    pub fn any_presence(&self) -> bool {
        self.any_presence
    }

    /// The sections as written.
    pub fn written(&self) -> &[RoomSection] {
        &self.written
    }

    /// The options of rooms no section matches.
    pub fn default_options(&self) -> RoomOptions {
        self.default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(pattern: &str, size: Option<usize>, ttl: Option<u64>) -> RoomSection {
        RoomSection {
            pattern: pattern.into(),
            history_size: size,
            history_ttl_secs: ttl,
            presence: None,
            join_leave: None,
        }
    }

    const DEFAULT: RoomOptions = RoomOptions {
        history_size: 0,
        history_ttl: Duration::from_secs(300),
        presence: false,
        join_leave: false,
    };

    #[test]
    fn presence_options_inherit_and_are_found() {
        let mut lobby = section("lobby:*", None, None);
        lobby.presence = Some(true);
        let mut quiet = section("lobby:quiet", None, None);
        quiet.join_leave = Some(false);
        let default = RoomOptions {
            join_leave: true,
            ..DEFAULT
        };
        let rules = RoomRules::new(vec![quiet, lobby], default).unwrap();
        assert!(rules.options("lobby:a").presence && rules.options("lobby:a").join_leave);
        assert!(!rules.options("lobby:quiet").join_leave);
        assert!(!rules.options("lobby:quiet").presence);
        assert!(rules.tracks_presence("other"), "the default's join_leave");
        let none = RoomRules::new(vec![], DEFAULT).unwrap();
        assert!(!none.any_presence() && !none.tracks_presence("x"));
    }

    #[test]
    fn the_first_matching_section_wins_and_unset_keys_inherit() {
        let rules = RoomRules::new(
            vec![
                section("chat:vip", Some(1000), None),
                section("chat:*", Some(100), Some(600)),
                section("*", Some(5), None),
            ],
            DEFAULT,
        )
        .unwrap();
        assert_eq!(rules.options("chat:vip").history_size, 1000);
        assert_eq!(rules.options("chat:vip").history_ttl, Duration::from_secs(300));
        assert_eq!(rules.options("chat:x").history_size, 100);
        assert_eq!(rules.options("chat:x").history_ttl, Duration::from_secs(600));
        assert_eq!(rules.options("lobby").history_size, 5);
        assert!(rules.any_history());
        let none = RoomRules::new(vec![section("a", None, None)], DEFAULT).unwrap();
        assert_eq!(none.options("a"), DEFAULT);
        assert!(!none.any_history());
    }

    #[test]
    fn bad_sections_are_refused_with_their_place() {
        for (s, want) in [
            (section("a*b", Some(1), None), "section 1"),
            (section("", Some(1), None), "a prefix ending"),
            (section("x", Some(MAX_HISTORY_SIZE + 1), None), "at most"),
            (section("x", Some(1), Some(0)), "positive"),
        ] {
            let err = RoomRules::new(vec![s], DEFAULT).unwrap_err().0;
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn sections_parse_from_toml_and_unknown_keys_list_the_valid_ones() {
        #[derive(Deserialize)]
        struct File {
            rooms: Vec<RoomSection>,
        }
        let f: File = toml::from_str(
            "[[rooms]]\nmatch = \"chat:*\"\nhistory_size = 100\nhistory_ttl_secs = 600\n\
             [[rooms]]\nmatch = \"x\"\nhistory-size = 1\n",
        )
        .unwrap();
        assert_eq!(f.rooms[0], section("chat:*", Some(100), Some(600)));
        assert_eq!(f.rooms[1], section("x", Some(1), None));
        let err = toml::from_str::<File>("[[rooms]]\nmatch = \"x\"\nhistroy_size = 1\n")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("history_size") && err.contains("match"), "{err}");
    }
}
