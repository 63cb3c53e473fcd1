//! Read buffers of parsed connections: a connection takes one when a socket has bytes to read
//! and gives it back once none of the bytes read into it waits to be written, so an idle
//! connection holds none whatever it carried before.
//!
//! Each connection worker thread keeps up to [`POOLED`] free buffers, so that a busy
//! connection takes and gives back a buffer per read without calling the allocator; one given
//! back to a full pool is freed. A worker runs one connection at a time, and a connection
//! keeps a buffer beyond its turn only while a socket cannot take what was read into it, so a
//! few suffice.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Bytes read from a socket at a time.
pub(crate) const READ_SIZE: usize = 16 * 1024;

/// Free buffers kept per thread.
const POOLED: usize = 8;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of [`READ_SIZE`] bytes, back in its thread's pool when dropped.
pub(crate) struct ReadBuffer(Box<[u8]>);

impl ReadBuffer {
    /// A buffer from this thread's pool, or a new one when the pool is empty.
    pub(crate) fn take() -> ReadBuffer {
        let pooled = FREE.try_with(|free| free.borrow_mut().pop()).ok().flatten();
        ReadBuffer(pooled.unwrap_or_else(|| vec![0; READ_SIZE].into_boxed_slice()))
    }
}

impl Drop for ReadBuffer {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.0);
        // During thread teardown the pool may be gone: the buffer is then freed.
        let _ = FREE.try_with(|free| {
            let mut free = free.borrow_mut();
            if free.len() < POOLED {
                free.push(buffer);
            }
        });
    }
}

impl Deref for ReadBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for ReadBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pooled() -> usize {
        FREE.with(|free| free.borrow().len())
    }

    #[test]
    fn buffers_given_back_are_taken_again_up_to_the_pool_size() {
        let first = ReadBuffer::take();
        assert_eq!(first.len(), READ_SIZE);
        let address = first.as_ptr();
        drop(first);
        assert_eq!(pooled(), 1);
        assert_eq!(
            ReadBuffer::take().as_ptr(),
            address,
            "reused, not allocated"
        );
        let many: Vec<ReadBuffer> = (0..POOLED + 3).map(|_| ReadBuffer::take()).collect();
        drop(many);
        assert_eq!(pooled(), POOLED, "the rest are freed");
    }
}
