//! R2-D2 requests: one `\r\n`-terminated line, `READ <file>`, `WRITE <file>`, `HALT` or `RESET`.
//!
//! Parsing only: turns the bytes of one line (without its `\r\n`) into a typed request that
//! borrows them. Framing, policy and replies belong to the parser module.

use axoneme_sdk::{ErrorCode, ParseError};

/// The four R2-D2 commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `READ <file>`
    Read,
    /// `WRITE <file>`
    Write,
    /// `HALT`
    Halt,
    /// `RESET`
    Reset,
}

impl Command {
    /// Every command, in the order the protocol lists them.
    pub const ALL: [Command; 4] = [Command::Read, Command::Write, Command::Halt, Command::Reset];

    /// The command as it is written on the wire and in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Read => "READ",
            Command::Write => "WRITE",
            Command::Halt => "HALT",
            Command::Reset => "RESET",
        }
    }

    /// The command named exactly `name`.
    pub fn from_name(name: &[u8]) -> Option<Command> {
        Command::ALL
            .into_iter()
            .find(|c| c.as_str().as_bytes() == name)
    }

    /// Whether the command names a file.
    pub fn takes_file(self) -> bool {
        matches!(self, Command::Read | Command::Write)
    }
}

/// One parsed request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// What is asked.
    pub command: Command,
    /// The file, for READ and WRITE.
    pub file: Option<&'a [u8]>,
}

impl<'a> Request<'a> {
    /// Parses a request line without its `\r\n`.
    pub fn parse(line: &'a [u8]) -> Result<Request<'a>, ParseError> {
        let (name, argument) = match line.iter().position(|&b| b == b' ') {
            Some(space) => (&line[..space], Some(&line[space + 1..])),
            None => (line, None),
        };
        let command = Command::from_name(name).ok_or(ParseError::new(
            ErrorCode::InvalidFrameType,
            "unknown R2-D2 command",
        ))?;
        match (command.takes_file(), argument) {
            (true, Some(file)) if !file.is_empty() && !file.contains(&b' ') => Ok(Request {
                command,
                file: Some(file),
            }),
            (false, None) => Ok(Request {
                command,
                file: None,
            }),
            (true, _) => Err(ParseError::new(
                ErrorCode::MalformedFrame,
                "READ and WRITE take one file name",
            )),
            (false, Some(_)) => Err(ParseError::new(
                ErrorCode::MalformedFrame,
                "HALT and RESET take no argument",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_four_commands() {
        assert_eq!(
            Request::parse(b"READ /etc/motd"),
            Ok(Request {
                command: Command::Read,
                file: Some(b"/etc/motd")
            })
        );
        assert_eq!(
            Request::parse(b"WRITE x"),
            Ok(Request {
                command: Command::Write,
                file: Some(b"x")
            })
        );
        assert_eq!(
            Request::parse(b"HALT"),
            Ok(Request {
                command: Command::Halt,
                file: None
            })
        );
        assert_eq!(
            Request::parse(b"RESET"),
            Ok(Request {
                command: Command::Reset,
                file: None
            })
        );
    }

    #[test]
    fn rejects_malformed_lines() {
        for line in [&b"read x"[..], b"JUMP", b"", b" READ x"] {
            assert_eq!(
                Request::parse(line).unwrap_err().code,
                ErrorCode::InvalidFrameType,
                "{line:?}"
            );
        }
        for line in [&b"READ"[..], b"READ ", b"WRITE a b", b"HALT now", b"RESET "] {
            assert_eq!(
                Request::parse(line).unwrap_err().code,
                ErrorCode::MalformedFrame,
                "{line:?}"
            );
        }
    }
}
