//! The access-log file as the writer writes it: appended to, with the pages already written
//! handed back to the kernel's page cache. The one place of the crate that calls the C library
//! unsafely, each call with what makes it sound.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;

/// Bytes of a log file after which their writeback is started, and their pages released from
/// the page cache one such step later.
pub(super) const RELEASE_STEP: u64 = 8 << 20;

/// A regular log file whose written pages do not stay in the page cache.
///
/// An access log is written once and rarely read back. Left alone, its pages fill the page
/// cache until memory runs short: every new page is memory the kernel must find (and, on a
/// virtual machine, often memory the host must first provide, several times slower than the
/// copy itself). So every [`RELEASE_STEP`] bytes the writer starts the writeback of what it
/// wrote and asks the kernel to drop the pages of the step before, which have been written back
/// meanwhile: the log then cycles through a few megabytes of cache. Both calls are hints that
/// never block on the disk; a page still dirty is simply kept.
pub(super) struct FileSink {
    file: File,
    /// File offset up to which this sink has written.
    written: u64,
    /// Offset up to which writeback was started.
    flushed: u64,
    /// Offset up to which pages were released.
    released: u64,
}

impl FileSink {
    pub(super) fn new(file: File, len: u64) -> FileSink {
        FileSink {
            file,
            written: len,
            flushed: len,
            released: len,
        }
    }

    fn release_written_pages(&mut self) {
        if self.written - self.flushed < RELEASE_STEP {
            return;
        }
        let fd = self.file.as_raw_fd();
        let offset = |n: u64| libc::off_t::try_from(n).unwrap_or(libc::off_t::MAX);
        // SAFETY: both calls only take a descriptor this sink owns and a byte range; they touch
        // no memory of this process.
        unsafe {
            libc::sync_file_range(
                fd,
                offset(self.flushed),
                offset(self.written - self.flushed),
                libc::SYNC_FILE_RANGE_WRITE,
            );
            libc::posix_fadvise(
                fd,
                offset(self.released),
                offset(self.flushed - self.released),
                libc::POSIX_FADV_DONTNEED,
            );
        }
        self.released = self.flushed;
        self.flushed = self.written;
    }
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.release_written_pages();
        Ok(())
    }
}
