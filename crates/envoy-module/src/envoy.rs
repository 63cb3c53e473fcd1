//! A safe view of one Envoy connection through the network-filter callbacks of `abi.rs`: its read
//! and write buffers (chunks, drain, append), data injected past this filter in either direction,
//! reading from the client stopped and resumed, closing, and its identity. It holds no state and
//! makes no decisions.
//!
//! Every method must be called on the Envoy worker thread that is running one of this
//! connection's event hooks, with the pointer Envoy passed to that hook: that is the one
//! condition under which Envoy's callbacks may be called, and all the `unsafe` blocks below rely
//! on it. Chunks borrow the view, so draining or changing a buffer (`&mut self`) cannot happen
//! while a chunk is still in use.

#![allow(unsafe_code)]

use std::net::{IpAddr, SocketAddr};

use crate::abi::{self, CloseType, EnvoyBuffer, FilterEnvoyPtr, ModuleBuffer};

/// One of Envoy's two connection buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Buffer {
    /// Bytes read from the client, on their way to the next filter (`tcp_proxy`: the upstream).
    Read,
    /// Bytes on their way to the client.
    Write,
}

/// The connection a hook was called for.
pub(crate) struct EnvoyConnection {
    ptr: FilterEnvoyPtr,
    /// The close asked for during the hook, done by [`EnvoyConnection::finish`].
    pending_close: Option<CloseType>,
}

impl EnvoyConnection {
    /// The connection behind `ptr`, the filter pointer Envoy passed to the running hook.
    pub(crate) fn new(ptr: FilterEnvoyPtr) -> EnvoyConnection {
        EnvoyConnection {
            ptr,
            pending_close: None,
        }
    }

    /// The bytes now in `buffer`, as Envoy's own slices, valid while `self` is not changed.
    pub(crate) fn chunks(&self, buffer: Buffer) -> Vec<&[u8]> {
        // SAFETY: `self.ptr` is the filter pointer of the running hook (see the module doc).
        let count = unsafe {
            match buffer {
                Buffer::Read => {
                    abi::envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks_size(
                        self.ptr,
                    )
                }
                Buffer::Write => {
                    abi::envoy_dynamic_module_callback_network_filter_get_write_buffer_chunks_size(
                        self.ptr,
                    )
                }
            }
        };
        if count == 0 {
            return Vec::new();
        }
        let empty = EnvoyBuffer {
            ptr: std::ptr::null(),
            length: 0,
        };
        let mut raw = vec![empty; count];
        // SAFETY: `raw` has room for the `count` chunks Envoy just reported, and `self.ptr` is
        // the running hook's filter pointer.
        let found = unsafe {
            match buffer {
                Buffer::Read => {
                    abi::envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks(
                        self.ptr,
                        raw.as_mut_ptr(),
                    )
                }
                Buffer::Write => {
                    abi::envoy_dynamic_module_callback_network_filter_get_write_buffer_chunks(
                        self.ptr,
                        raw.as_mut_ptr(),
                    )
                }
            }
        };
        if !found {
            return Vec::new();
        }
        raw.iter()
            .filter(|chunk| !chunk.ptr.is_null() && chunk.length > 0)
            // SAFETY: Envoy owns each chunk and keeps it valid until the buffer changes, which
            // needs `&mut self` while the returned slices borrow `self`.
            .map(|chunk| unsafe {
                std::slice::from_raw_parts(chunk.ptr.cast::<u8>(), chunk.length)
            })
            .collect()
    }

    /// Removes the first `n` bytes of `buffer`.
    pub(crate) fn drain(&mut self, buffer: Buffer, n: usize) {
        // SAFETY: `self.ptr` is the running hook's filter pointer.
        unsafe {
            match buffer {
                Buffer::Read => {
                    abi::envoy_dynamic_module_callback_network_filter_drain_read_buffer(self.ptr, n)
                }
                Buffer::Write => {
                    abi::envoy_dynamic_module_callback_network_filter_drain_write_buffer(
                        self.ptr, n,
                    )
                }
            };
        }
    }

    /// Appends `bytes` to `buffer`, for the filters after this one.
    pub(crate) fn append(&mut self, buffer: Buffer, bytes: &[u8]) {
        let data = ModuleBuffer::of(bytes);
        // SAFETY: `data` borrows `bytes`, which Envoy copies during the call; `self.ptr` is the
        // running hook's filter pointer.
        unsafe {
            match buffer {
                Buffer::Read => {
                    abi::envoy_dynamic_module_callback_network_filter_append_read_buffer(
                        self.ptr, data,
                    )
                }
                Buffer::Write => {
                    abi::envoy_dynamic_module_callback_network_filter_append_write_buffer(
                        self.ptr, data,
                    )
                }
            };
        }
    }

    /// Hands `bytes` to the filters after this one in the direction of `buffer` (toward the
    /// upstream for [`Buffer::Read`], toward the client for [`Buffer::Write`]) outside of that
    /// direction's own event: they are not seen by this filter again.
    pub(crate) fn inject(&mut self, buffer: Buffer, bytes: &[u8], end_stream: bool) {
        let data = ModuleBuffer::of(bytes);
        // SAFETY: `data` borrows `bytes`, which Envoy copies during the call; `self.ptr` is the
        // running hook's filter pointer.
        unsafe {
            match buffer {
                Buffer::Read => abi::envoy_dynamic_module_callback_network_filter_inject_read_data(
                    self.ptr, data, end_stream,
                ),
                Buffer::Write => {
                    abi::envoy_dynamic_module_callback_network_filter_inject_write_data(
                        self.ptr, data, end_stream,
                    )
                }
            }
        }
    }

    /// Stops (`true`) or resumes (`false`) reading from the client; every stop must be
    /// followed by one resume.
    pub(crate) fn read_disable(&mut self, disable: bool) {
        // SAFETY: `self.ptr` is the running hook's filter pointer.
        unsafe {
            abi::envoy_dynamic_module_callback_network_filter_read_disable(self.ptr, disable);
        }
    }

    /// Closes the connection when the hook's own work is over ([`EnvoyConnection::finish`]):
    /// Envoy raises the close event at once, calling this module's event hook, which must not
    /// find the filter still borrowed by the running hook. The first close asked for is done.
    pub(crate) fn close(&mut self, close_type: CloseType) {
        self.pending_close.get_or_insert(close_type);
    }

    /// Does the close asked for during the hook, if any; the filter must no longer be in use.
    pub(crate) fn finish(self) {
        if let Some(close_type) = self.pending_close {
            // SAFETY: `self.ptr` is the running hook's filter pointer.
            unsafe { abi::envoy_dynamic_module_callback_network_filter_close(self.ptr, close_type) }
        }
    }

    /// Envoy's number for the connection, unique within the process.
    pub(crate) fn id(&self) -> u64 {
        // SAFETY: `self.ptr` is the running hook's filter pointer.
        unsafe { abi::envoy_dynamic_module_callback_network_filter_get_connection_id(self.ptr) }
    }

    /// The client's address; `None` when it is not an IP address.
    pub(crate) fn remote_address(&self) -> Option<SocketAddr> {
        let mut address = EnvoyBuffer {
            ptr: std::ptr::null(),
            length: 0,
        };
        let mut port = 0u32;
        // SAFETY: both out-pointers point at live locals; `self.ptr` is the running hook's
        // filter pointer.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_network_filter_get_remote_address(
                self.ptr,
                &mut address,
                &mut port,
            )
        };
        if !found || address.ptr.is_null() {
            return None;
        }
        // SAFETY: Envoy owns the address text and keeps it valid during the hook.
        let text = unsafe { std::slice::from_raw_parts(address.ptr.cast::<u8>(), address.length) };
        let ip: IpAddr = std::str::from_utf8(text).ok()?.parse().ok()?;
        Some(SocketAddr::new(ip, u16::try_from(port).ok()?))
    }
}
