//! Text-protocol replies, framed by their own structure: a reply element is one line, or a
//! `VALUE`/`VA` line together with the data block whose length it announces. A value is never
//! searched for `END`, so a value containing `\r\nEND\r\n` cannot desynchronise the stream.
//!
//! Framing only; which request an element answers is the pending queue's business.

use axoneme_sdk::{ErrorCode, Input, ParseError};

use crate::pending::Element;

/// Longest reply line (without a data block).
pub const MAX_REPLY_LINE: usize = 8 * 1024;

/// The next reply element at the start of `input`, with its length in bytes; `None` when more
/// bytes are needed to tell. `searched` holds how much of `input` earlier calls searched for the
/// end of this line in vain (0 for a new line), so a long line is not searched again per read.
pub fn next_element(
    input: Input<'_>,
    searched: &mut usize,
    scratch: &mut Vec<u8>,
) -> Result<Option<(Element, usize)>, ParseError> {
    let Some(newline) = input.find_byte(b'\n', *searched) else {
        *searched = input.len();
        return if input.len() >= MAX_REPLY_LINE {
            Err(REPLY_LINE_TOO_LONG)
        } else {
            Ok(None)
        };
    };
    *searched = 0;
    if newline >= MAX_REPLY_LINE {
        return Err(REPLY_LINE_TOO_LONG);
    }
    let line_len = newline + 1;
    let end = if newline > 0 && input.byte(newline - 1) == Some(b'\r') {
        newline - 1
    } else {
        newline
    };
    let line = input.contiguous(0..end, scratch).unwrap_or_default();
    let element = classify(line)?;
    let data = match element {
        Element::Value => data_len(line)? + 2,
        _ => 0,
    };
    Ok(Some((element, line_len + data)))
}

const REPLY_LINE_TOO_LONG: ParseError =
    ParseError::new(ErrorCode::FrameTooLarge, "reply line longer than 8 KiB");

fn classify(line: &[u8]) -> Result<Element, ParseError> {
    let word = &line[..line.iter().position(|&b| b == b' ').unwrap_or(line.len())];
    Ok(match word {
        b"VALUE" | b"VA" => Element::Value,
        b"MN" => Element::Noop,
        b"END" | b"EN" | b"OK" | b"RESET" | b"BUSY" | b"ERROR" | b"CLIENT_ERROR"
        | b"SERVER_ERROR" => Element::Terminal,
        _ => Element::Line,
    })
}

/// The data length a `VALUE <key> <flags> <bytes> [<cas>]` or `VA <size> <flags>*` line
/// announces.
fn data_len(line: &[u8]) -> Result<usize, ParseError> {
    let mut tokens = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
    let position = if tokens.next() == Some(b"VALUE") {
        2
    } else {
        0
    };
    let token = tokens.nth(position).unwrap_or_default();
    if token.is_empty() || token.len() > 19 || !token.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::new(
            ErrorCode::InvalidFrameLength,
            "value line without a valid length",
        ));
    }
    Ok(token.iter().fold(0, |n, &d| n * 10 + usize::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(bytes: &[u8]) -> Option<(Element, usize)> {
        let slices = [bytes];
        next_element(Input::new(&slices), &mut 0, &mut Vec::new()).unwrap()
    }

    #[test]
    fn values_are_framed_by_their_length_not_by_searching() {
        let reply = b"VALUE k 0 9\r\n\r\nEND\r\nxx\r\nEND\r\n";
        assert_eq!(element(reply), Some((Element::Value, 13 + 9 + 2)));
        assert_eq!(
            element(b"VALUE k 0 9 77\r\n"),
            Some((Element::Value, 16 + 11))
        );
        assert_eq!(element(b"VA 2 t5\r\nhi\r\n"), Some((Element::Value, 9 + 4)));
        assert_eq!(element(b"END\r\n"), Some((Element::Terminal, 5)));
        assert_eq!(element(b"VALUE k 0 9"), None);
    }

    #[test]
    fn lines_are_classified() {
        assert_eq!(element(b"MN\r\n"), Some((Element::Noop, 4)));
        assert_eq!(element(b"STAT pid 1\r\n"), Some((Element::Line, 12)));
        assert_eq!(element(b"STORED\r\n"), Some((Element::Line, 8)));
        assert_eq!(element(b"HD c5\r\n"), Some((Element::Line, 7)));
        assert_eq!(
            element(b"SERVER_ERROR out of memory\r\n"),
            Some((Element::Terminal, 28))
        );
        assert_eq!(element(b"EN\n"), Some((Element::Terminal, 3)));
    }

    #[test]
    fn bad_value_lines_and_endless_lines_are_errors() {
        let slices: [&[u8]; 1] = [b"VALUE k 0 x\r\n"];
        assert!(next_element(Input::new(&slices), &mut 0, &mut Vec::new()).is_err());
        let long = vec![b'a'; MAX_REPLY_LINE];
        let slices = [&long[..]];
        assert!(next_element(Input::new(&slices), &mut 0, &mut Vec::new()).is_err());
    }
}
