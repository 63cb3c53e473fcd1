//! Framing and headers: the 4-byte length that delimits every Kafka message, the request
//! header (v1, and v2 for flexible versions with tagged fields) and the response header (v0,
//! and v1 for flexible versions except ApiVersions).
//!
//! Kafka 4.x no longer has request header v0 (it served ControlledShutdown v0 only). The
//! client id stays a classic nullable string even in header v2 (`RequestHeader.json`,
//! `"flexibleVersions": "none"` on `ClientId`). This module reads headers and writes request
//! and response frames; message bodies are the message modules' business.

use axoneme_sdk::Input;

use crate::api::{Api, API_VERSIONS};
use crate::error::Error;
use crate::wire::{Reader, Writer};

/// Bytes of the length that starts every frame.
pub const LENGTH_LEN: usize = 4;

/// The length of the frame at the start of `input`, its 4-byte length field included, or
/// `None` when the length field itself has not arrived. A negative length, or one above `max`
/// (the frame without its length field), is an error.
pub fn frame_len(input: &Input<'_>, max: usize) -> Result<Option<usize>, Error> {
    let Some(bytes) = peek::<LENGTH_LEN>(input, 0) else {
        return Ok(None);
    };
    let length = i32::from_be_bytes(bytes);
    let length = usize::try_from(length).map_err(|_| Error::NegativeLength(length))?;
    if length > max {
        return Err(Error::TooLarge { length, max });
    }
    Ok(Some(LENGTH_LEN + length))
}

/// The `N` bytes of `input` at `at`, or `None` when it is shorter: read from its first chunk
/// when they lie there, as they nearly always do (a copy of a known size, without a call),
/// else gathered by [`Input::peek`].
#[inline(always)]
pub fn peek<const N: usize>(input: &Input<'_>, at: usize) -> Option<[u8; N]> {
    match input.first_chunk().get(at..at + N) {
        Some(bytes) => bytes.try_into().ok(),
        None => input.peek::<N>(at),
    }
}

/// A request header, borrowing the client id from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader<'a> {
    /// The API.
    pub api: &'static Api,
    /// The API version.
    pub api_version: i16,
    /// The id the response must carry.
    pub correlation_id: i32,
    /// The client id; `None` when null.
    pub client_id: Option<&'a [u8]>,
}

impl<'a> RequestHeader<'a> {
    /// Reads the header at the start of `message` (a frame without its length field) and
    /// returns it with a reader positioned at the body, set for the version's encoding.
    pub fn parse(message: &'a [u8]) -> Result<(RequestHeader<'a>, Reader<'a>), Error> {
        let mut r = Reader::new(message, false);
        let key = r.i16("the API key")?;
        let api_version = r.i16("the API version")?;
        let correlation_id = r.i32("the correlation id")?;
        let client_id = r.nullable_string("the client id")?;
        let api = Api::by_key(key).ok_or(Error::UnknownApiKey(key))?;
        if api.versions.is_none() || api_version < 0 {
            return Err(Error::UnsupportedVersion {
                api: api.name,
                version: api_version,
            });
        }
        let mut body = Reader::new(
            &message[message.len() - r.remaining()..],
            api.is_flexible(api_version),
        );
        body.tagged_fields()?;
        let header = RequestHeader {
            api,
            api_version,
            correlation_id,
            client_id,
        };
        Ok((header, body))
    }

    /// Whether the body and the response use the flexible encoding.
    pub fn is_flexible(&self) -> bool {
        self.api.is_flexible(self.api_version)
    }
}

/// Appends a request frame to `out`: the length, `header` (v1, or v2 without tagged fields for
/// flexible versions) and the body `body` writes in that version's encoding.
pub fn write_request(
    out: &mut Vec<u8>,
    header: &RequestHeader<'_>,
    body: impl FnOnce(&mut Writer<'_>),
) {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_LEN]);
    out.extend_from_slice(&header.api.key.to_be_bytes());
    out.extend_from_slice(&header.api_version.to_be_bytes());
    out.extend_from_slice(&header.correlation_id.to_be_bytes());
    Writer::new(out, false).nullable_string(header.client_id);
    let flexible = header.is_flexible();
    if flexible {
        Writer::new(out, true).tagged_fields();
    }
    body(&mut Writer::new(out, flexible));
    let length = (out.len() - start - LENGTH_LEN) as u32;
    out[start..start + LENGTH_LEN].copy_from_slice(&length.to_be_bytes());
}

/// Appends a response frame to `out`: the length, the response header for `header`'s API and
/// version, and the body `body` writes in that version's encoding.
pub fn write_response(
    out: &mut Vec<u8>,
    header: &RequestHeader<'_>,
    body: impl FnOnce(&mut Writer<'_>),
) {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_LEN]);
    out.extend_from_slice(&header.correlation_id.to_be_bytes());
    let flexible = header.is_flexible();
    if flexible && header.api.key != API_VERSIONS {
        Writer::new(out, true).tagged_fields();
    }
    body(&mut Writer::new(out, flexible));
    let length = (out.len() - start - LENGTH_LEN) as u32;
    out[start..start + LENGTH_LEN].copy_from_slice(&length.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::WireError;

    #[test]
    fn frames_are_delimited_by_their_length() {
        let slices: [&[u8]; 2] = [b"\x00\x00", b"\x00\x05abcde"];
        assert_eq!(frame_len(&Input::new(&slices), 100), Ok(Some(9)));
        assert_eq!(frame_len(&Input::new(&slices[..1]), 100), Ok(None));
        assert_eq!(
            frame_len(&Input::new(&slices), 4),
            Err(Error::TooLarge { length: 5, max: 4 })
        );
        let negative: [&[u8]; 1] = [b"\xff\xff\xff\xfe"];
        assert_eq!(
            frame_len(&Input::new(&negative), 100),
            Err(Error::NegativeLength(-2))
        );
    }

    #[test]
    fn peeked_bytes_are_the_same_in_one_chunk_or_across_several() {
        let whole: [&[u8]; 1] = [b"abcdef"];
        let split: [&[u8]; 4] = [b"", b"ab", b"c", b"def"];
        for slices in [&whole[..], &split[..]] {
            let input = Input::new(slices);
            assert_eq!(peek::<4>(&input, 0), Some(*b"abcd"));
            assert_eq!(peek::<2>(&input, 4), Some(*b"ef"));
            assert_eq!(peek::<3>(&input, 4), None);
            assert_eq!(peek::<2>(&input.skip(3), 1), Some(*b"ef"));
        }
    }

    #[test]
    fn header_v1_and_v2() {
        let v1 = b"\x00\x03\x00\x08\x00\x00\x00\x07\x00\x02idBODY";
        let (header, body) = RequestHeader::parse(v1).unwrap();
        assert_eq!(
            (header.api.key, header.api_version, header.correlation_id),
            (3, 8, 7)
        );
        assert_eq!(header.client_id, Some(&b"id"[..]));
        assert!(!body.flexible());
        assert_eq!(body.remaining(), 4);
        let v2 = b"\x00\x03\x00\x0c\x00\x00\x00\x07\xff\xff\x01\x00\x01xBODY";
        let (header, body) = RequestHeader::parse(v2).unwrap();
        assert_eq!(header.client_id, None);
        assert!(body.flexible());
        assert_eq!(body.remaining(), 4);
    }

    #[test]
    fn unknown_keys_removed_apis_and_short_headers() {
        assert_eq!(
            RequestHeader::parse(b"\x00\x63\x00\x00\x00\x00\x00\x01\x00\x00").unwrap_err(),
            Error::UnknownApiKey(99)
        );
        assert_eq!(
            RequestHeader::parse(b"\x00\x04\x00\x01\x00\x00\x00\x01\x00\x00").unwrap_err(),
            Error::UnsupportedVersion {
                api: "LeaderAndIsr",
                version: 1
            }
        );
        assert_eq!(
            RequestHeader::parse(b"\x00\x03\x00\x0c\x00\x00\x00\x07\x00\x05ab").unwrap_err(),
            Error::Wire(WireError::Truncated("the client id"))
        );
    }

    #[test]
    fn response_headers_follow_the_version() {
        let header = |key, version| RequestHeader {
            api: Api::by_key(key).unwrap(),
            api_version: version,
            correlation_id: 0x01020304,
            client_id: None,
        };
        let mut out = Vec::new();
        write_response(&mut out, &header(3, 12), |w| w.i16(7));
        assert_eq!(out, b"\x00\x00\x00\x07\x01\x02\x03\x04\x00\x00\x07");
        out.clear();
        write_response(&mut out, &header(3, 8), |w| w.i16(7));
        assert_eq!(out, b"\x00\x00\x00\x06\x01\x02\x03\x04\x00\x07");
        out.clear();
        write_response(&mut out, &header(API_VERSIONS, 4), |w| w.i16(7));
        assert_eq!(out, b"\x00\x00\x00\x06\x01\x02\x03\x04\x00\x07");
    }
}
