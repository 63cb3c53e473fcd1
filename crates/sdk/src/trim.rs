//! Buffers that grow for a large frame and give the memory back once it is done, so that a
//! connection that once carried a large request does not hold its memory while idle.

use std::collections::VecDeque;

/// Bytes of capacity a buffer keeps between frames (see [`TrimCapacity`]).
pub const KEPT_CAPACITY: usize = 4 * 1024;

/// A buffer that gives back what a large frame made it take.
pub trait TrimCapacity {
    /// When the buffer has more than [`KEPT_CAPACITY`] bytes of capacity and holds no more
    /// than that, shrinks it to what it holds (freeing it when it holds nothing); otherwise
    /// does nothing. Meant to be called whenever a frame is done: it costs a comparison unless
    /// a large frame grew the buffer, so the buffers of small frames keep their memory from
    /// one frame to the next, and the first small frame after a large one allocates anew.
    fn trim_capacity(&mut self);
}

/// Whether a buffer of `capacity` elements of `size` bytes holding `len` is to be shrunk.
#[inline]
fn oversized(capacity: usize, len: usize, size: usize) -> bool {
    let kept = KEPT_CAPACITY / size.max(1);
    capacity > kept && len <= kept
}

impl<T> TrimCapacity for Vec<T> {
    #[inline]
    fn trim_capacity(&mut self) {
        if oversized(self.capacity(), self.len(), size_of::<T>()) {
            self.shrink_to_fit();
        }
    }
}

impl<T> TrimCapacity for VecDeque<T> {
    #[inline]
    fn trim_capacity(&mut self) {
        if oversized(self.capacity(), self.len(), size_of::<T>()) {
            self.shrink_to_fit();
        }
    }
}

impl TrimCapacity for String {
    #[inline]
    fn trim_capacity(&mut self) {
        if oversized(self.capacity(), self.len(), 1) {
            self.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grown_buffer_shrinks_once_what_it_holds_fits() {
        let mut buffer = vec![0u8; 1 << 20];
        buffer.trim_capacity();
        assert_eq!(buffer.capacity(), 1 << 20, "still holding a large frame");
        buffer.truncate(10);
        buffer.trim_capacity();
        assert_eq!(buffer.capacity(), 10);
        assert_eq!(buffer, [0; 10]);
        buffer.clear();
        buffer.extend_from_slice(&[1; 1 << 16]);
        buffer.clear();
        buffer.trim_capacity();
        assert_eq!(buffer.capacity(), 0, "freed");
    }

    #[test]
    fn a_small_buffer_keeps_its_capacity() {
        let mut buffer: Vec<u8> = Vec::with_capacity(KEPT_CAPACITY);
        let before = buffer.as_ptr();
        buffer.trim_capacity();
        assert_eq!(buffer.capacity(), KEPT_CAPACITY);
        assert_eq!(buffer.as_ptr(), before, "not reallocated");
    }

    #[test]
    fn capacity_is_counted_in_bytes() {
        let mut wide: Vec<u64> = Vec::with_capacity(KEPT_CAPACITY);
        wide.trim_capacity();
        assert!(wide.capacity() * size_of::<u64>() <= KEPT_CAPACITY);
        let mut queue: VecDeque<u32> = VecDeque::with_capacity(1 << 16);
        queue.push_back(1);
        queue.trim_capacity();
        assert!(queue.capacity() * size_of::<u32>() <= KEPT_CAPACITY);
        let mut text = String::with_capacity(1 << 16);
        text.push_str("ks.table");
        text.trim_capacity();
        assert!(text.capacity() <= KEPT_CAPACITY);
        assert_eq!(text, "ks.table");
    }
}
