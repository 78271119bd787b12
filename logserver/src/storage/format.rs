//! The on-disk format, in one place: file names, file headers, entry frames and index entries.
//! Pure encoding and decoding; no I/O. FORMAT.md describes the same layout in prose.

use std::path::{Path, PathBuf};

/// Version written in every file header; a file of another version is refused.
pub const FORMAT_VERSION: u32 = 1;
/// Magic at the start of a store file.
pub const STORE_MAGIC: [u8; 8] = *b"PLOGSTOR";
/// Magic at the start of an index file.
pub const INDEX_MAGIC: [u8; 8] = *b"PLOGINDX";
/// Header length of both file kinds: magic (8), version (4), flags (4), base offset (8).
pub const FILE_HEADER_LEN: u64 = 24;
/// Length of a store file's header.
pub const STORE_HEADER_LEN: u64 = FILE_HEADER_LEN;
/// Length of an index file's header.
pub const INDEX_HEADER_LEN: u64 = FILE_HEADER_LEN;
/// Bytes of an entry frame before its payload: len (4), crc (4), offset (8), term (8), kind (1).
pub const FRAME_HEADER_LEN: u64 = 25;
/// Bytes of one index entry: relative offset (4), store position (8).
pub const INDEX_ENTRY_LEN: u64 = 12;
/// Largest payload a frame can carry (its length is a u32).
pub const MAX_PAYLOAD: u64 = u32::MAX as u64 - FRAME_HEADER_LEN;

/// Extension of store files.
pub const STORE_EXT: &str = "store";
/// Extension of index files.
pub const INDEX_EXT: &str = "index";

/// `<dir>/<base offset, 20 digits>.<ext>`: sorting names sorts segments.
pub fn segment_path(dir: &Path, base: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// The base offset and extension of a segment file name, or `None` for any other file.
pub fn parse_segment_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if ext != STORE_EXT && ext != INDEX_EXT {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

/// The header of a store or index file.
pub fn encode_file_header(magic: [u8; 8], base: u64) -> [u8; FILE_HEADER_LEN as usize] {
    let mut h = [0u8; FILE_HEADER_LEN as usize];
    h[0..8].copy_from_slice(&magic);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    // h[12..16]: flags, zero in version 1.
    h[16..24].copy_from_slice(&base.to_le_bytes());
    h
}

/// Checks a file header; the error is a reason for [`Error::Corrupt`](super::Error::Corrupt).
pub fn check_file_header(bytes: &[u8], magic: [u8; 8], base: u64) -> Result<(), String> {
    if bytes.len() < FILE_HEADER_LEN as usize {
        return Err(format!(
            "file shorter than its {FILE_HEADER_LEN}-byte header"
        ));
    }
    if bytes[0..8] != magic {
        return Err(format!("bad magic {:?}", &bytes[0..8]));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(format!(
            "unsupported format version {version} (expected {FORMAT_VERSION})"
        ));
    }
    let flags = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if flags != 0 {
        return Err(format!("unknown header flags {flags:#x}"));
    }
    let found = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    if found != base {
        return Err(format!(
            "header says base offset {found}, file name says {base}"
        ));
    }
    Ok(())
}

/// Total frame length of a payload of `payload_len` bytes.
pub fn frame_len(payload_len: usize) -> u64 {
    FRAME_HEADER_LEN + payload_len as u64
}

/// Appends the frame of one entry to `buf`.
pub fn encode_frame(buf: &mut Vec<u8>, offset: u64, term: u64, kind: u8, payload: &[u8]) {
    let start = buf.len();
    let len = u32::try_from(payload.len()).expect("payload length checked against MAX_PAYLOAD");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&[0u8; 4]); // crc, filled below
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&term.to_le_bytes());
    buf.push(kind);
    buf.extend_from_slice(payload);
    let crc = frame_crc(&buf[start..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// CRC32C of a frame: its length field, then everything after the crc field.
fn frame_crc(frame: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&frame[0..4]), &frame[8..])
}

/// The fixed header fields of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub payload_len: u32,
    pub crc: u32,
    pub offset: u64,
    pub term: u64,
    pub kind: u8,
}

impl FrameHeader {
    /// Parses the first [`FRAME_HEADER_LEN`] bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> FrameHeader {
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        FrameHeader {
            payload_len: u32_at(0),
            crc: u32_at(4),
            offset: u64_at(8),
            term: u64_at(16),
            kind: bytes[24],
        }
    }

    /// Length of the whole frame.
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_LEN + u64::from(self.payload_len)
    }
}

/// Checks a complete frame (`frame.len()` equals its header's frame length) that should hold
/// `expected_offset`. The error is a reason for [`Error::Corrupt`](super::Error::Corrupt).
pub fn check_frame(frame: &[u8], expected_offset: u64) -> Result<FrameHeader, String> {
    if (frame.len() as u64) < FRAME_HEADER_LEN {
        return Err("frame shorter than its header".into());
    }
    let h = FrameHeader::parse(frame);
    if h.frame_len() != frame.len() as u64 {
        return Err(format!(
            "frame length field says {} bytes, the index says {}",
            h.frame_len(),
            frame.len()
        ));
    }
    let crc = frame_crc(frame);
    if crc != h.crc {
        return Err(format!(
            "CRC32C mismatch: stored {:#010x}, computed {crc:#010x}",
            h.crc
        ));
    }
    if h.offset != expected_offset {
        return Err(format!(
            "frame holds offset {}, expected {expected_offset}",
            h.offset
        ));
    }
    Ok(h)
}

/// One index entry.
pub fn encode_index_entry(rel: u32, position: u64) -> [u8; INDEX_ENTRY_LEN as usize] {
    let mut e = [0u8; INDEX_ENTRY_LEN as usize];
    e[0..4].copy_from_slice(&rel.to_le_bytes());
    e[4..12].copy_from_slice(&position.to_le_bytes());
    e
}

/// `(relative offset, store position)` of an index entry.
pub fn decode_index_entry(bytes: &[u8]) -> (u32, u64) {
    (
        u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")),
        u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_crc_catches_any_flip() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 42, 7, 3, b"hello");
        assert_eq!(buf.len() as u64, frame_len(5));
        let h = check_frame(&buf, 42).unwrap();
        assert_eq!((h.offset, h.term, h.kind, h.payload_len), (42, 7, 3, 5));
        assert!(check_frame(&buf, 43).unwrap_err().contains("expected 43"));
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert!(
                check_frame(&bad, 42).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn names_sort_and_parse() {
        let p = segment_path(Path::new("/d"), 17, STORE_EXT);
        assert_eq!(p, Path::new("/d/00000000000000000017.store"));
        assert_eq!(
            parse_segment_name("00000000000000000017.index"),
            Some((17, "index"))
        );
        assert_eq!(parse_segment_name("17.index"), None);
        assert_eq!(parse_segment_name("00000000000000000017.tmp"), None);
    }

    #[test]
    fn header_checks() {
        let h = encode_file_header(STORE_MAGIC, 9);
        check_file_header(&h, STORE_MAGIC, 9).unwrap();
        assert!(check_file_header(&h, INDEX_MAGIC, 9).is_err());
        assert!(check_file_header(&h, STORE_MAGIC, 10).is_err());
        assert!(check_file_header(&h[..10], STORE_MAGIC, 9).is_err());
    }
}
