//! The desk: every agent seen lately, whether they are available, away or
//! offline, and how many conversations each holds, as the agent consoles
//! show it (read by the application's desk loop).

use std::sync::Arc;

use super::user::{UserId, Username};

/// An agent's presence as the desk shows it, in the desk's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeskStatus {
    Available,
    Away,
    Offline,
}

impl DeskStatus {
    /// From whether the agent has a socket open and the status they chose.
    pub fn of(online: bool, away: bool) -> Self {
        match (online, away) {
            (false, _) => DeskStatus::Offline,
            (true, true) => DeskStatus::Away,
            (true, false) => DeskStatus::Available,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeskStatus::Available => "available",
            DeskStatus::Away => "away",
            DeskStatus::Offline => "offline",
        }
    }
}

/// One agent on the desk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeskAgent {
    pub id: UserId,
    pub username: Username,
    pub status: DeskStatus,
    /// The conversations they hold now.
    pub conversations: usize,
}

/// The desk as last read, in [`arrange`]'s order.
pub type Desk = Arc<Vec<DeskAgent>>;

/// Available agents first, then away, then offline, each by name; at most `limit`.
pub fn arrange(mut agents: Vec<DeskAgent>, limit: usize) -> Vec<DeskAgent> {
    agents.sort_by(|a, b| (a.status, a.username.as_str()).cmp(&(b.status, b.username.as_str())));
    agents.truncate(limit);
    agents
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, status: DeskStatus) -> DeskAgent {
        DeskAgent {
            id: UserId::parse(&format!("id{name}")).unwrap(),
            username: Username::parse(name).unwrap(),
            status,
            conversations: 0,
        }
    }

    #[test]
    fn the_desk_lists_available_then_away_then_offline_by_name() {
        assert_eq!(DeskStatus::of(true, false), DeskStatus::Available);
        assert_eq!(DeskStatus::of(true, true), DeskStatus::Away);
        assert_eq!(DeskStatus::of(false, true), DeskStatus::Offline);
        let desk = arrange(
            vec![
                agent("zed", DeskStatus::Offline),
                agent("eve", DeskStatus::Away),
                agent("bob", DeskStatus::Available),
                agent("amy", DeskStatus::Offline),
                agent("dan", DeskStatus::Available),
            ],
            4,
        );
        let names: Vec<&str> = desk.iter().map(|a| a.username.as_str()).collect();
        assert_eq!(names, ["bob", "dan", "eve", "amy"]);
    }
}
