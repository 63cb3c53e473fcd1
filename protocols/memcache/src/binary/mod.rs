//! The memcached binary protocol: packet headers, what each opcode means to policy, and the
//! packets the proxy composes itself (denials and barriers).
//!
//! Parsing and composing only; no framing state.

use axoneme_sdk::{ErrorCode, ParseError};

use crate::command::Command;
use crate::pending::Shape;

/// Length of every packet header.
pub const HEADER_LEN: usize = 24;

/// Magic byte of a request.
pub const REQUEST_MAGIC: u8 = 0x80;

/// Magic byte of a response.
pub const RESPONSE_MAGIC: u8 = 0x81;

/// The NOOP opcode.
pub const NOOP: u8 = 0x0a;

/// The STAT opcode.
pub const STAT: u8 = 0x10;

/// Status of a denial: "authentication error", which clients report as a refusal.
pub const DENIAL_STATUS: u16 = 0x0008;

/// Body of a denial.
pub const DENIAL_BODY: &[u8] = b"access denied";

/// Length of a denial packet.
pub const DENIAL_LEN: usize = HEADER_LEN + DENIAL_BODY.len();

/// Opaque of the proxy's own barrier NOOP (ASCII "AXON").
pub const BARRIER_OPAQUE: u32 = 0x4158_4f4e;

/// A packet header, request or response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub magic: u8,
    pub opcode: u8,
    pub key_len: u16,
    pub extras_len: u8,
    pub total_body: u32,
    pub opaque: u32,
}

impl Header {
    /// Reads a header.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Header {
        Header {
            magic: bytes[0],
            opcode: bytes[1],
            key_len: u16::from_be_bytes([bytes[2], bytes[3]]),
            extras_len: bytes[4],
            total_body: u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            opaque: u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]),
        }
    }

    /// Length of the whole packet.
    pub fn packet_len(&self) -> usize {
        HEADER_LEN + self.total_body as usize
    }

    /// Where the key ends, from the start of the packet.
    pub fn key_end(&self) -> usize {
        HEADER_LEN + usize::from(self.extras_len) + usize::from(self.key_len)
    }

    /// Checks a request header: its magic, that extras and key fit in the body, and that the
    /// value is at most `max_value` bytes.
    pub fn check_request(&self, max_value: usize) -> Result<(), ParseError> {
        if self.magic != REQUEST_MAGIC {
            return Err(ParseError::new(
                ErrorCode::InvalidFrameType,
                "binary request with a bad magic byte",
            ));
        }
        let key_and_extras = usize::from(self.extras_len) + usize::from(self.key_len);
        let value = (self.total_body as usize)
            .checked_sub(key_and_extras)
            .ok_or(ParseError::new(
                ErrorCode::InvalidFrameLength,
                "key and extras longer than the body",
            ))?;
        if value > max_value {
            return Err(ParseError::new(
                ErrorCode::FrameTooLarge,
                "value larger than the configured maximum",
            ));
        }
        self.check_read_whole()
    }

    /// Checks that memcached reads this request as exactly `packet_len` bytes, so that the proxy
    /// and the server agree on where the next request starts (else bytes the proxy judged as
    /// part of one request would run as another). Memcached 1.6 reads only as far as the key of
    /// STAT, TOUCH and the GAT opcodes, and answers any opcode it does not implement by skipping
    /// `total_body` bytes counted from the end of the key rather than from the header.
    fn check_read_whole(&self) -> Result<(), ParseError> {
        let key_and_extras = usize::from(self.extras_len) + usize::from(self.key_len);
        if !implemented(self.opcode) && key_and_extras > 0 {
            return Err(ParseError::new(
                ErrorCode::MalformedFrame,
                "key or extras in an opcode memcached does not implement",
            ));
        }
        if reads_no_value(self.opcode) && self.total_body as usize != key_and_extras {
            return Err(ParseError::new(
                ErrorCode::MalformedFrame,
                "value in a STAT, TOUCH or GAT request, which memcached would read as a request",
            ));
        }
        Ok(())
    }
}

/// The opcodes memcached 1.6 implements.
fn implemented(opcode: u8) -> bool {
    matches!(opcode, 0x00..=0x1a | 0x1c..=0x1e | 0x20..=0x24)
}

/// The opcodes whose body memcached 1.6 reads only up to the end of the key: STAT, TOUCH, GAT,
/// GATQ, GATK and GATKQ.
fn reads_no_value(opcode: u8) -> bool {
    matches!(opcode, STAT | 0x1c | 0x1d | 0x1e | 0x23 | 0x24)
}

/// What an opcode means to policy and to reply ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opcode {
    /// The command as policy sees it.
    pub command: Command,
    /// Quiet opcodes are answered only when interesting (a hit, an error).
    pub quiet: bool,
    /// How a non-quiet answer ends.
    pub shape: Shape,
}

/// What `opcode` means.
pub fn opcode(opcode: u8) -> Opcode {
    use Command::*;
    let (command, quiet) = match opcode {
        0x00 | 0x0c => (Get, false),
        0x09 | 0x0d => (Get, true),
        0x01 => (Set, false),
        0x11 => (Set, true),
        0x02 => (Add, false),
        0x12 => (Add, true),
        0x03 => (Replace, false),
        0x13 => (Replace, true),
        0x04 => (Delete, false),
        0x14 => (Delete, true),
        0x05 => (Incr, false),
        0x15 => (Incr, true),
        0x06 => (Decr, false),
        0x16 => (Decr, true),
        0x07 => (Quit, false),
        0x17 => (Quit, true),
        0x08 => (FlushAll, false),
        0x18 => (FlushAll, true),
        0x0a => (Noop, false),
        0x0b => (Version, false),
        0x0e => (Append, false),
        0x19 => (Append, true),
        0x0f => (Prepend, false),
        0x1a => (Prepend, true),
        0x10 => (Stats, false),
        0x1b => (Verbosity, false),
        0x1c => (Touch, false),
        0x1d | 0x23 => (Gat, false),
        0x1e | 0x24 => (Gat, true),
        0x20 => (SaslListMechs, false),
        0x21 => (SaslAuth, false),
        0x22 => (SaslStep, false),
        0x30 => (Rget, false),
        0x31 => (Rset, false),
        0x32 => (Rsetq, true),
        0x33 => (Rappend, false),
        0x34 => (Rappendq, true),
        0x35 => (Rprepend, false),
        0x36 => (Rprependq, true),
        0x37 => (Rdelete, false),
        0x38 => (Rdeleteq, true),
        0x39 => (Rincr, false),
        0x3a => (Rincrq, true),
        0x3b => (Rdecr, false),
        0x3c => (Rdecrq, true),
        0x3d => (SetVbucket, false),
        0x3e => (GetVbucket, false),
        0x3f => (DelVbucket, false),
        0x40 => (TapConnect, false),
        0x41 => (TapMutation, false),
        0x42 => (TapDelete, false),
        0x43 => (TapFlush, false),
        0x44 => (TapOpaque, false),
        0x45 => (TapVbucketSet, false),
        0x46 => (TapCheckpointStart, false),
        0x47 => (TapCheckpointEnd, false),
        _ => (Other, false),
    };
    let shape = if opcode == STAT {
        Shape::Stat
    } else {
        Shape::Single
    };
    Opcode {
        command,
        quiet,
        shape,
    }
}

/// The response denying a request: its opcode and opaque, status 0x0008, body `access denied`.
pub fn denial(opcode: u8, opaque: u32) -> [u8; DENIAL_LEN] {
    let mut packet = [0u8; DENIAL_LEN];
    packet[0] = RESPONSE_MAGIC;
    packet[1] = opcode;
    packet[6..8].copy_from_slice(&DENIAL_STATUS.to_be_bytes());
    packet[8..12].copy_from_slice(&(DENIAL_BODY.len() as u32).to_be_bytes());
    packet[12..16].copy_from_slice(&opaque.to_be_bytes());
    packet[HEADER_LEN..].copy_from_slice(DENIAL_BODY);
    packet
}

/// The NOOP request the proxy sends as a barrier.
pub fn barrier() -> [u8; HEADER_LEN] {
    let mut packet = [0u8; HEADER_LEN];
    packet[0] = REQUEST_MAGIC;
    packet[1] = NOOP;
    packet[12..16].copy_from_slice(&BARRIER_OPAQUE.to_be_bytes());
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_echoes_opcode_and_opaque() {
        let packet = denial(0x0d, 0xdead_beef);
        let header = Header::parse(packet[..HEADER_LEN].try_into().unwrap());
        assert_eq!(header.magic, RESPONSE_MAGIC);
        assert_eq!(header.opcode, 0x0d);
        assert_eq!(header.opaque, 0xdead_beef);
        assert_eq!(u16::from_be_bytes([packet[6], packet[7]]), 0x0008);
        assert_eq!(header.packet_len(), DENIAL_LEN);
        assert_eq!(&packet[HEADER_LEN..], b"access denied");
    }

    #[test]
    fn opcodes_map_to_cilium_commands() {
        assert_eq!(
            opcode(0x00),
            Opcode {
                command: Command::Get,
                quiet: false,
                shape: Shape::Single
            }
        );
        assert!(opcode(0x0d).quiet);
        assert_eq!(opcode(0x11).command, Command::Set);
        assert_eq!(opcode(0x10).shape, Shape::Stat);
        assert_eq!(
            opcode(0x1e),
            Opcode {
                command: Command::Gat,
                quiet: true,
                shape: Shape::Single
            }
        );
        assert_eq!(opcode(0x47).command, Command::TapCheckpointEnd);
        assert_eq!(opcode(0xfe).command, Command::Other);
    }

    #[test]
    fn request_headers_are_checked() {
        let mut bytes = barrier();
        assert_eq!(Header::parse(&bytes).check_request(10), Ok(()));
        bytes[4] = 8; // 8 bytes of extras in an empty body
        assert_eq!(
            Header::parse(&bytes).check_request(10).unwrap_err().code,
            ErrorCode::InvalidFrameLength
        );
        bytes[4] = 0;
        bytes[8..12].copy_from_slice(&11u32.to_be_bytes());
        assert_eq!(
            Header::parse(&bytes).check_request(10).unwrap_err().code,
            ErrorCode::FrameTooLarge
        );
        bytes[0] = RESPONSE_MAGIC;
        assert_eq!(
            Header::parse(&bytes).check_request(100).unwrap_err().code,
            ErrorCode::InvalidFrameType
        );
    }

    /// A request header with these lengths, as the binary protocol spec lays it out.
    fn request(opcode: u8, extras_len: u8, key_len: u16, total_body: u32) -> Header {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0] = REQUEST_MAGIC;
        bytes[1] = opcode;
        bytes[2..4].copy_from_slice(&key_len.to_be_bytes());
        bytes[4] = extras_len;
        bytes[8..12].copy_from_slice(&total_body.to_be_bytes());
        Header::parse(&bytes)
    }

    #[test]
    fn requests_memcached_would_not_read_whole_are_refused() {
        // STAT, TOUCH, GAT, GATQ, GATK, GATKQ: memcached reads no value, so a value would run
        // as the next request.
        for opcode in [0x10, 0x1c, 0x1d, 0x1e, 0x23, 0x24] {
            let extras = if opcode == 0x10 { 0 } else { 4 };
            let exact = request(opcode, extras, 3, u32::from(extras) + 3);
            assert_eq!(exact.check_request(1024), Ok(()), "{opcode:#x}");
            let with_value = request(opcode, extras, 3, u32::from(extras) + 3 + 24);
            assert_eq!(
                with_value.check_request(1024).unwrap_err().code,
                ErrorCode::MalformedFrame,
                "{opcode:#x}"
            );
        }
        // Opcodes memcached does not implement: it skips the body counted from the end of the
        // key, so a key or extras would make it skip into the next request.
        for opcode in [0x1b, 0x1f, 0x25, 0x30, 0x3d, 0x40, 0x47, 0xfe] {
            assert_eq!(request(opcode, 0, 0, 24).check_request(1024), Ok(()));
            for (extras, key) in [(0, 4), (4, 0)] {
                assert_eq!(
                    request(opcode, extras, key, 4)
                        .check_request(1024)
                        .unwrap_err()
                        .code,
                    ErrorCode::MalformedFrame,
                    "{opcode:#x}"
                );
            }
        }
        // Opcodes that read their whole body keep their value.
        assert_eq!(request(0x01, 8, 3, 8 + 3 + 5).check_request(1024), Ok(()));
        assert_eq!(request(0x0e, 0, 3, 3 + 5).check_request(1024), Ok(()));
        assert_eq!(request(0x21, 0, 5, 5 + 10).check_request(1024), Ok(()));
    }
}
