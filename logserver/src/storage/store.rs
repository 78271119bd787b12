//! A segment's store file: the file header followed by entry frames, appended at the end and read
//! with positional reads (`read_exact_at`), so reads need only `&self`. This module moves bytes; it
//! does not decide what is valid (see `recovery`) or where an entry is (see `index`).
//!
//! With preallocation on (the active segment's store), a thread keeps the file zero-filled ahead
//! of the next frame (see `prealloc`); the zeros are cut off when the segment is sealed or
//! closed.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::{Error, Result};
use super::format::{check_file_header, encode_file_header, STORE_HEADER_LEN, STORE_MAGIC};
use super::prealloc::Preallocator;

/// An open store file.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    file: File,
    /// Bytes of frames, header included; the next frame goes here.
    len: u64,
    /// Zero-fills the file ahead of `len`, if on.
    prealloc: Option<Preallocator>,
}

impl Store {
    /// Creates a new store file holding only its header, fsynced. Fails if the file exists.
    pub fn create(path: PathBuf, base: u64) -> Result<Store> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut store = Store {
            path,
            file,
            len: 0,
            prealloc: None,
        };
        store.write_header(base)?;
        Ok(store)
    }

    /// Opens an existing store file and checks its header. A file shorter than its header is
    /// returned with `len` < [`STORE_HEADER_LEN`] so recovery can decide what it means.
    pub fn open(path: PathBuf, base: u64) -> Result<Store> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let store = Store {
            path,
            file,
            len,
            prealloc: None,
        };
        if len >= STORE_HEADER_LEN {
            let mut header = [0u8; STORE_HEADER_LEN as usize];
            store.read_exact_at(&mut header, 0)?;
            check_file_header(&header, STORE_MAGIC, base)
                .map_err(|reason| Error::corrupt(&store.path, 0, reason))?;
        }
        Ok(store)
    }

    /// Rewrites the header of a store that has no complete header (a segment whose creation was
    /// interrupted), dropping whatever partial bytes it held.
    pub fn write_header(&mut self, base: u64) -> Result<()> {
        self.truncate(0)?;
        self.append(&encode_file_header(STORE_MAGIC, base))?;
        self.sync()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of frames in the file (header included), not counting preallocated zeros.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Keeps the file zero-filled `chunk` bytes ahead of the last frame (on a thread), up to
    /// about `limit` bytes (the segment's size limit), and drops frames more than `window` bytes
    /// behind the last one from the page cache (the same thread; 0 keeps them); `chunk` 0 turns
    /// both off.
    pub fn set_prealloc(&mut self, chunk: u64, limit: u64, window: u64) -> Result<()> {
        self.prealloc = None;
        if chunk > 0 {
            let size = self
                .file
                .metadata()
                .map_err(|e| Error::io(&self.path, e))?
                .len();
            let file = self.file_clone()?;
            let (path, len) = (self.path.clone(), self.len);
            self.prealloc = Some(Preallocator::start(
                path,
                file,
                (len, size),
                chunk,
                limit,
                window,
            ));
        }
        Ok(())
    }

    /// Appends `buf` after the last frame with one write. On failure the file is cut back to its
    /// old length (best effort) so no partial frame stays behind.
    pub fn append(&mut self, buf: &[u8]) -> Result<()> {
        let written = match &mut self.prealloc {
            Some(p) => p.write_frames(buf, self.len),
            None => self.file.write_all_at(buf, self.len),
        };
        if let Err(e) = written {
            let _ = match &mut self.prealloc {
                Some(p) => p.truncate(self.len),
                None => self.file.set_len(self.len),
            };
            return Err(Error::io(&self.path, e));
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Fills `buf` from `position`.
    pub fn read_exact_at(&self, buf: &mut [u8], position: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, position)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// A second handle on the file (`dup`).
    pub fn file_clone(&self) -> Result<File> {
        self.file.try_clone().map_err(|e| Error::io(&self.path, e))
    }

    /// Flushes written data (and the file length) to stable storage.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }

    /// Cuts the file to `len` bytes (preallocated space too) and makes the new length durable.
    pub fn truncate(&mut self, len: u64) -> Result<()> {
        match &mut self.prealloc {
            Some(p) => p.truncate(len),
            None => self.file.set_len(len),
        }
        .map_err(|e| Error::io(&self.path, e))?;
        self.file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        self.len = len;
        Ok(())
    }

    /// Stops preallocating and cuts the zeros off the file, durably: a sealed or closed
    /// segment's store ends with its last frame.
    pub fn trim(&mut self) -> Result<()> {
        if let Some(mut p) = self.prealloc.take() {
            p.stop();
            if p.size() > self.len {
                self.truncate(self.len)?;
            }
        }
        Ok(())
    }
}
