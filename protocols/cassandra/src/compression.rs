//! Frame body compression as negotiated in STARTUP (protocol v3 and v4): LZ4 (a 4-byte
//! big-endian uncompressed length, then an LZ4 block) and Snappy (a raw Snappy block).
//!
//! Decompression writes into a caller's buffer and refuses to produce more than a limit, so a
//! small frame cannot claim gigabytes.

/// A compression algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Lz4,
    Snappy,
}

/// A body that does not decompress, or would be too large.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decompress a frame body: {0}")]
pub struct DecompressError(String);

impl Compression {
    /// The algorithm STARTUP names (`lz4`, `snappy`).
    pub fn from_name(name: &str) -> Option<Compression> {
        match name.to_ascii_lowercase().as_str() {
            "lz4" => Some(Compression::Lz4),
            "snappy" => Some(Compression::Snappy),
            _ => None,
        }
    }

    /// Decompresses `body` into `out` (replacing its contents), producing at most `limit` bytes.
    pub fn decompress(
        self,
        body: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), DecompressError> {
        let fail = |e: &dyn std::fmt::Display| DecompressError(e.to_string());
        let len = match self {
            Compression::Lz4 => {
                let header: [u8; 4] = body
                    .get(..4)
                    .and_then(|h| h.try_into().ok())
                    .ok_or_else(|| fail(&"short LZ4 header"))?;
                u32::from_be_bytes(header) as usize
            }
            Compression::Snappy => snap::raw::decompress_len(body).map_err(|e| fail(&e))?,
        };
        if len > limit {
            return Err(DecompressError(format!(
                "{len} bytes once decompressed, more than the limit of {limit}"
            )));
        }
        out.clear();
        out.resize(len, 0);
        let written = match self {
            Compression::Lz4 => {
                lz4_flex::block::decompress_into(&body[4..], out).map_err(|e| fail(&e))?
            }
            Compression::Snappy => snap::raw::Decoder::new()
                .decompress(body, out)
                .map_err(|e| fail(&e))?,
        };
        if written != len {
            return Err(DecompressError(format!(
                "{written} bytes decompressed where {len} were announced"
            )));
        }
        Ok(())
    }

    /// Compresses `body` as a frame body.
    pub fn compress(self, body: &[u8]) -> Vec<u8> {
        match self {
            Compression::Lz4 => {
                let mut out = (body.len() as u32).to_be_bytes().to_vec();
                out.extend(lz4_flex::block::compress(body));
                out
            }
            Compression::Snappy => snap::raw::Encoder::new()
                .compress_vec(body)
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_limits() {
        let body = b"SELECT * FROM attendance.daily_records WHERE k = 1".repeat(20);
        for compression in [Compression::Lz4, Compression::Snappy] {
            let packed = compression.compress(&body);
            let mut out = Vec::new();
            compression.decompress(&packed, &mut out, 1 << 20).unwrap();
            assert_eq!(out, body, "{compression:?}");
            assert!(
                compression.decompress(&packed, &mut out, 100).is_err(),
                "{compression:?} limit"
            );
            assert!(
                compression
                    .decompress(&packed[..packed.len() / 2], &mut out, 1 << 20)
                    .is_err(),
                "{compression:?} truncated"
            );
        }
        assert_eq!(Compression::from_name("LZ4"), Some(Compression::Lz4));
        assert_eq!(Compression::from_name("zstd"), None);
    }
}
