//! The image table: which local binary runs a container of a given image.
//!
//! The file has one mapping a line, `IMAGE BINARY`, `#` starts a comment. `IMAGE` matches a container
//! image without its tag or digest (`proglog/logserver:0.1` matches `proglog/logserver`); a registry
//! prefix is ignored too (`ghcr.io/x/proglog/logserver` matches `proglog/logserver`). `BINARY` is a file
//! name looked up in the agent's bin dir, or an absolute path. An image not in the table cannot run: the
//! container waits with reason `ErrImagePull`, as an image that cannot be pulled would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The parsed table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageTable {
    entries: BTreeMap<String, String>,
}

/// Strips a tag or digest from an image reference.
fn repository(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    // A colon after the last slash is a tag; one before it is a registry port.
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

impl ImageTable {
    /// Parses the table's text.
    pub fn parse(text: &str) -> Result<Self> {
        let mut entries = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(image), Some(binary), None) => {
                    entries.insert(repository(image).to_string(), binary.to_string());
                }
                _ => {
                    return Err(Error::Config(format!(
                        "image table line {}: expected `IMAGE BINARY`, got {line:?}",
                        n + 1
                    )))
                }
            }
        }
        Ok(Self { entries })
    }

    /// Reads and parses the table file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(Error::io(format!("reading image table {}", path.display())))?;
        Self::parse(&text)
    }

    /// The binary name or path for `image`, if the table has it. The longest matching suffix of the
    /// repository (on `/` boundaries) wins, so registry prefixes do not matter.
    pub fn binary_for(&self, image: &str) -> Option<&str> {
        let repo = repository(image);
        let mut candidate = repo;
        loop {
            if let Some(b) = self.entries.get(candidate) {
                return Some(b);
            }
            candidate = candidate.split_once('/')?.1;
        }
    }

    /// Resolves `image` to an existing executable file, or says why it cannot run.
    pub fn resolve(&self, image: &str, bin_dir: &Path) -> Result<PathBuf, String> {
        let binary = self.binary_for(image).ok_or_else(|| {
            format!("image {image:?} is not in the devcluster image table (tests/devcluster/images.txt)")
        })?;
        let path = if binary.starts_with('/') {
            PathBuf::from(binary)
        } else {
            bin_dir.join(binary)
        };
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "image {image:?} maps to {}, which does not exist (build it: cargo build --bin {binary})",
                path.display()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "# comment\nproglog/logserver logserver\n\nbusybox /bin/sh # shell\n";

    #[test]
    fn matches_without_tag_digest_or_registry() {
        let t = ImageTable::parse(TABLE).unwrap();
        assert_eq!(t.binary_for("proglog/logserver"), Some("logserver"));
        assert_eq!(t.binary_for("proglog/logserver:0.1.0"), Some("logserver"));
        assert_eq!(
            t.binary_for("proglog/logserver@sha256:abc"),
            Some("logserver")
        );
        assert_eq!(
            t.binary_for("localhost:5000/proglog/logserver:1"),
            Some("logserver")
        );
        assert_eq!(t.binary_for("busybox:1.36"), Some("/bin/sh"));
        assert_eq!(t.binary_for("nginx"), None);
        assert_eq!(t.binary_for("proglog/other"), None);
    }

    #[test]
    fn rejects_malformed_lines() {
        assert!(ImageTable::parse("one two three\n").is_err());
        assert!(ImageTable::parse("lonely\n").is_err());
    }

    #[test]
    fn resolve_reports_unknown_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("logserver"), b"").unwrap();
        let t = ImageTable::parse(TABLE).unwrap();
        assert_eq!(
            t.resolve("proglog/logserver:1", dir.path()).unwrap(),
            dir.path().join("logserver")
        );
        assert!(t
            .resolve("nginx", dir.path())
            .unwrap_err()
            .contains("not in the devcluster image table"));
        let t = ImageTable::parse("x/y missing-bin\n").unwrap();
        assert!(t
            .resolve("x/y", dir.path())
            .unwrap_err()
            .contains("does not exist"));
    }
}
