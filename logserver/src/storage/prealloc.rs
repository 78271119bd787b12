//! Zero-filling a store file ahead of its last frame, on a thread of its own.
//!
//! An append into blocks that already hold (synced) zeros is an overwrite: its `fdatasync` has
//! no file size and no block allocation to journal. Measured on this kind of machine (ext4, one
//! virtual disk, three writers at once as three members are): 2.5 KB writes fsync in ~157 µs
//! instead of ~268 µs, 87 KB in ~242 µs instead of ~470 µs. The zeros are real writes, not
//! `fallocate` (its unwritten extents must be converted on the first write, a journaled change
//! again). A thread per active segment keeps `chunk` bytes zero-filled and synced ahead of the
//! writer, so appends do not stall on it; chunks stay small (default 1 MiB) because the zeros'
//! own fsync competes for the disk: with 8 MiB chunks a ProduceBatch p99 went from 7 to 17 ms
//! (zeros written in the append path: 19 ms), with 1 MiB or 256 KiB it stayed at 6.6-7.4 ms.
//!
//! The same thread also drops synced frames from the page cache once they are more than a window
//! behind the writer (`posix_fadvise(DONTNEED)`, [`DROP_STEP`] at a time), so a growing log does
//! not grow the page cache: consumers and followers read near the end, which stays cached, and
//! older frames are read from the disk when asked for (and cached again by the kernel). NB: on
//! this kind of machine page-cache pages the host has taken back cost ~8x more to write the first
//! time: buffered writes ran at ~3 GB/s for the first GiB of a growing file and at ~400 MB/s after
//! it, ~4.6 GB/s throughout when pages behind a 64 MiB window were dropped; three members
//! producing 205 MB per run lost 30-40% of their throughput after ~1 GiB without it. In a
//! Kubernetes pod the page cache also counts against the pod's memory.
//!
//! Who writes where: the writer writes frames below `ready` without a lock; everything at or past
//! the file's end (zeros or frames) is written under the state's lock, so the thread never
//! writes zeros over a frame. The file always ends with [`ZERO_GUARD`] zeros while this runs
//! (the writer adds them itself when it outruns the thread), which is how recovery knows a store
//! was preallocated.

use std::fs::File;
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Zero bytes always kept after the last frame of a preallocated store, so that recovery can tell
/// a preallocated file (it ends in zeros) from one written before preallocation or cut exactly.
pub const ZERO_GUARD: u64 = 4096;

/// Frames leave the page cache this many bytes at a time (one `posix_fadvise` each, ~0.3 ms per
/// 4 MiB of cached pages here, on the thread, not in the append path).
pub const DROP_STEP: u64 = 4 << 20;

/// Source of the zeros, and the most written under the lock at a time.
static ZEROS: [u8; 256 << 10] = [0; 256 << 10];

/// The zero-filling thread of one store file; stopped (and joined) when dropped.
#[derive(Debug)]
pub struct Preallocator {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    chunk: u64,
    /// The writer's last request: zero-filled up to here.
    asked: u64,
    /// Bytes behind the last frame kept in the page cache; 0 keeps everything.
    window: u64,
    /// The writer's last request: frames below here may leave the page cache.
    drop_asked: u64,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    file: File,
    state: Mutex<State>,
    wake: Condvar,
    /// `[0, ready)` is frames or synced zeros: the writer may write there without the lock.
    ready: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// The file's size: nothing exists at or past it.
    size: u64,
    /// Keep the file zero-filled up to here (rounded up to the chunk, capped at `limit`).
    want: u64,
    limit: u64,
    /// Bumped by a truncation: a sync that started before it does not make anything ready.
    generation: u64,
    /// Drop frames below here from the page cache.
    drop_to: u64,
    /// Set by `stop`, or by the thread itself when a write failed (a full disk, say): the
    /// writer then adds its guard zeros itself.
    stop: bool,
}

impl Preallocator {
    /// Starts zero-filling `file` (a second handle on the store, whose frames end at `len` and
    /// whose size is `size`) `chunk` bytes ahead of the writer, up to `limit` bytes, and dropping
    /// frames more than `window` bytes behind it from the page cache (0: never).
    pub fn start(
        path: PathBuf,
        file: File,
        (len, size): (u64, u64),
        chunk: u64,
        limit: u64,
        window: u64,
    ) -> Self {
        let chunk = chunk.max(ZERO_GUARD);
        let shared = Arc::new(Shared {
            path,
            file,
            state: Mutex::new(State {
                size,
                want: len + chunk,
                limit: limit.max(len) + ZERO_GUARD,
                generation: 0,
                drop_to: 0,
                stop: false,
            }),
            wake: Condvar::new(),
            ready: AtomicU64::new(size.min(len)),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("proglog-prealloc".into())
            .spawn(move || worker.run(chunk))
            .map_err(|e| tracing::warn!(error = %e, "no preallocation thread"))
            .ok();
        Preallocator {
            shared,
            thread,
            chunk,
            asked: len + chunk,
            window,
            drop_asked: 0,
        }
    }

    /// Writes `buf` at `at` (the end of the frames). Below `ready` it is an overwrite of zeros and
    /// needs no lock; otherwise the file is first extended with zeros to the guard past it.
    pub fn write_frames(&mut self, buf: &[u8], at: u64) -> std::io::Result<()> {
        let end = at + buf.len() as u64;
        if end + ZERO_GUARD > self.shared.ready.load(Ordering::Acquire) {
            let mut st = self.shared.state();
            if st.size < end + ZERO_GUARD {
                self.shared.write_zeros(st.size, end + ZERO_GUARD)?;
                st.size = end + ZERO_GUARD;
            }
        }
        self.shared.file.write_all_at(buf, at)?;
        if end + self.chunk / 2 > self.asked {
            self.asked = end + self.chunk;
            self.shared.state().want = self.asked;
            self.shared.wake.notify_one();
        }
        if self.window > 0 && end >= self.drop_asked + self.window + DROP_STEP {
            self.drop_asked = end - self.window;
            self.shared.state().drop_to = self.drop_asked;
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Cuts the file to `len` (zeros written ahead too; not synced).
    pub fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        let mut st = self.shared.state();
        let cut = self.shared.file.set_len(len);
        st.size = len;
        st.generation += 1;
        st.want = len + self.chunk;
        self.asked = st.want;
        st.drop_to = st.drop_to.min(len);
        self.drop_asked = st.drop_to;
        self.shared.ready.store(len, Ordering::Release);
        self.shared.wake.notify_one();
        cut
    }

    /// The file's size (frames, zeros written ahead and the guard).
    pub fn size(&self) -> u64 {
        self.shared.state().size
    }

    /// Stops the thread and waits for it (it finishes the zeros it is writing).
    pub fn stop(&mut self) {
        self.shared.state().stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Preallocator {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write_zeros(&self, from: u64, to: u64) -> std::io::Result<()> {
        let mut at = from;
        while at < to {
            let n = (to - at).min(ZEROS.len() as u64);
            self.file.write_all_at(&ZEROS[..n as usize], at)?;
            at += n;
        }
        Ok(())
    }

    /// Drops `[from, to)` of the file from the page cache: clean pages go; dirty ones (not synced
    /// yet) are only queued for writeback and stay.
    fn drop_cached(&self, from: u64, to: u64) {
        let Some(len) = NonZeroU64::new(to.saturating_sub(from)) else {
            return;
        };
        if let Err(e) =
            rustix::fs::fadvise(&self.file, from, Some(len), rustix::fs::Advice::DontNeed)
        {
            tracing::debug!(path = %self.path.display(), error = %e,
                "dropping written frames from the page cache failed");
        }
    }

    fn run(&self, chunk: u64) {
        // Frames below here have been dropped from the page cache.
        let mut dropped = 0;
        loop {
            let (generation, drop_to, zero_fill) = {
                let mut st = self.state();
                dropped = dropped.min(st.size);
                while !st.stop && st.size >= st.want.min(st.limit) && st.drop_to <= dropped {
                    st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                if st.stop {
                    return;
                }
                (st.generation, st.drop_to, st.size < st.want.min(st.limit))
            };
            if drop_to > dropped {
                self.drop_cached(dropped, drop_to);
                dropped = drop_to;
            }
            if !zero_fill {
                continue;
            }
            // Zeros a piece at a time, each under the lock, up to a whole chunk past `want`.
            loop {
                let mut st = self.state();
                let target = (st.want.div_ceil(chunk) * chunk).min(st.limit);
                if st.stop || st.generation != generation || st.size >= target {
                    break;
                }
                let to = target.min(st.size + ZEROS.len() as u64);
                if let Err(e) = self.write_zeros(st.size, to) {
                    tracing::warn!(path = %self.path.display(), error = %e,
                        "preallocating the store failed; appends extend the file again");
                    let _ = self.file.set_len(st.size);
                    st.stop = true;
                    return;
                }
                st.size = to;
            }
            let synced = self.state().size;
            if let Err(e) = self.file.sync_data() {
                tracing::warn!(path = %self.path.display(), error = %e,
                    "syncing preallocated zeros failed");
                self.state().stop = true;
                return;
            }
            let st = self.state();
            if st.generation == generation {
                self.ready.fetch_max(synced.min(st.size), Ordering::AcqRel);
            }
        }
    }
}
