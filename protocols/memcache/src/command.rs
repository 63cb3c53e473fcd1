//! Memcached commands as policies name them, and the groups of commands a rule may name.
//!
//! The names are Cilium's, so existing policies keep their meaning. This module maps names to
//! commands and groups; which wire command is which [`Command`] is decided by the text and
//! binary modules.

/// A memcached command, as policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Command {
    Add,
    Set,
    Replace,
    Append,
    Prepend,
    Cas,
    Incr,
    Decr,
    Get,
    Delete,
    Touch,
    Gat,
    Slabs,
    Lru,
    LruCrawler,
    Watch,
    Stats,
    FlushAll,
    CacheMemlimit,
    Version,
    Misbehave,
    Quit,
    Noop,
    Verbosity,
    SaslListMechs,
    SaslAuth,
    SaslStep,
    Rget,
    Rset,
    Rsetq,
    Rappend,
    Rappendq,
    Rprepend,
    Rprependq,
    Rdelete,
    Rdeleteq,
    Rincr,
    Rincrq,
    Rdecr,
    Rdecrq,
    SetVbucket,
    GetVbucket,
    DelVbucket,
    TapConnect,
    TapMutation,
    TapDelete,
    TapFlush,
    TapOpaque,
    TapVbucketSet,
    TapCheckpointStart,
    TapCheckpointEnd,
    /// A command memcached may know but policy has no name for (`shutdown`, an unassigned
    /// opcode, ...): only rules that allow every command allow it.
    Other,
}

/// Every named command with its policy name, in declaration order.
pub const NAMES: [(Command, &str); 51] = [
    (Command::Add, "add"),
    (Command::Set, "set"),
    (Command::Replace, "replace"),
    (Command::Append, "append"),
    (Command::Prepend, "prepend"),
    (Command::Cas, "cas"),
    (Command::Incr, "incr"),
    (Command::Decr, "decr"),
    (Command::Get, "get"),
    (Command::Delete, "delete"),
    (Command::Touch, "touch"),
    (Command::Gat, "gat"),
    (Command::Slabs, "slabs"),
    (Command::Lru, "lru"),
    (Command::LruCrawler, "lru_crawler"),
    (Command::Watch, "watch"),
    (Command::Stats, "stats"),
    (Command::FlushAll, "flush_all"),
    (Command::CacheMemlimit, "cache_memlimit"),
    (Command::Version, "version"),
    (Command::Misbehave, "misbehave"),
    (Command::Quit, "quit"),
    (Command::Noop, "noop"),
    (Command::Verbosity, "verbosity"),
    (Command::SaslListMechs, "sasl-list-mechs"),
    (Command::SaslAuth, "sasl-auth"),
    (Command::SaslStep, "sasl-step"),
    (Command::Rget, "rget"),
    (Command::Rset, "rset"),
    (Command::Rsetq, "rsetq"),
    (Command::Rappend, "rappend"),
    (Command::Rappendq, "rappendq"),
    (Command::Rprepend, "rprepend"),
    (Command::Rprependq, "rprependq"),
    (Command::Rdelete, "rdelete"),
    (Command::Rdeleteq, "rdeleteq"),
    (Command::Rincr, "rincr"),
    (Command::Rincrq, "rincrq"),
    (Command::Rdecr, "rdecr"),
    (Command::Rdecrq, "rdecrq"),
    (Command::SetVbucket, "set-vbucket"),
    (Command::GetVbucket, "get-vbucket"),
    (Command::DelVbucket, "del-vbucket"),
    (Command::TapConnect, "tap-connect"),
    (Command::TapMutation, "tap-mutation"),
    (Command::TapDelete, "tap-delete"),
    (Command::TapFlush, "tap-flush"),
    (Command::TapOpaque, "tap-opaque"),
    (Command::TapVbucketSet, "tap-vbucket-set"),
    (Command::TapCheckpointStart, "tap-checkpoint-start"),
    (Command::TapCheckpointEnd, "tap-checkpoint-end"),
];

impl Command {
    /// The command a policy names (not a group).
    pub fn from_name(name: &str) -> Option<Command> {
        NAMES.iter().find(|(_, n)| *n == name).map(|&(c, _)| c)
    }

    /// The policy name (`"unknown"` for [`Command::Other`]).
    pub fn name(self) -> &'static str {
        NAMES.get(self as usize).map_or("unknown", |(_, name)| name)
    }
}

/// A set of commands: what one rule's `command` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSet(u64);

/// Storage commands plus incr and decr (Cilium's `storage`).
const STORAGE: [Command; 8] = [
    Command::Add,
    Command::Set,
    Command::Replace,
    Command::Append,
    Command::Prepend,
    Command::Cas,
    Command::Incr,
    Command::Decr,
];

impl CommandSet {
    /// Every command, [`Command::Other`] included: a rule without `command`.
    pub const ALL: CommandSet = CommandSet(u64::MAX);

    fn of(commands: &[Command]) -> CommandSet {
        CommandSet(commands.iter().fold(0, |bits, &c| bits | 1 << c as u8))
    }

    /// The command or group a policy names, if it is one.
    pub fn from_name(name: &str) -> Option<CommandSet> {
        match name {
            "storage" => Some(CommandSet::of(&STORAGE)),
            "writeGroup" => {
                let mut writes = STORAGE.to_vec();
                writes.extend([Command::Delete, Command::Touch]);
                Some(CommandSet::of(&writes))
            }
            _ => NAMES
                .iter()
                .find(|(_, n)| *n == name)
                .map(|&(c, _)| CommandSet::of(&[c])),
        }
    }

    /// Whether `command` is in the set.
    pub fn contains(self, command: Command) -> bool {
        self.0 & (1 << command as u8) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (i, (command, name)) in NAMES.iter().enumerate() {
            assert_eq!(*command as usize, i, "{name} is out of order");
            assert_eq!(command.name(), *name);
            assert_eq!(
                CommandSet::from_name(name),
                Some(CommandSet::of(&[*command]))
            );
        }
        assert_eq!(Command::Other.name(), "unknown");
        assert_eq!(CommandSet::from_name("unknown"), None);
        assert_eq!(CommandSet::from_name("GET"), None);
    }

    #[test]
    fn groups_are_cilium_s() {
        let storage = CommandSet::from_name("storage").unwrap();
        let write = CommandSet::from_name("writeGroup").unwrap();
        for c in STORAGE {
            assert!(storage.contains(c) && write.contains(c), "{c:?}");
        }
        for c in [Command::Delete, Command::Touch] {
            assert!(!storage.contains(c) && write.contains(c), "{c:?}");
        }
        for c in [
            Command::Get,
            Command::Gat,
            Command::FlushAll,
            Command::Other,
        ] {
            assert!(!storage.contains(c) && !write.contains(c), "{c:?}");
        }
        assert!(CommandSet::ALL.contains(Command::Other));
    }
}
