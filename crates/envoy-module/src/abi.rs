//! The part of Envoy's dynamic-module C ABI (`source/extensions/dynamic_modules/abi/abi.h`,
//! ABI version `v0.1.0`, that of Envoy 1.38 and 1.39, which Envoy 1.40 still serves) that the network filter uses: the types, and the callbacks
//! Envoy exports for a module to call. Declarations only: the event hooks Envoy calls are in
//! `hooks.rs`, and the safe wrapper over these callbacks is in `envoy.rs`.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void};

/// The ABI version this module is built against, as `ENVOY_DYNAMIC_MODULES_ABI_VERSION` in the
/// header defines it (NUL-terminated). Envoy logs a warning when it differs from its own (1.40
/// says `v0.2.0`) and loads the module anyway.
pub const ABI_VERSION: &[u8] = b"v0.1.0\0";

/// `envoy_dynamic_module_type_network_filter_config_envoy_ptr`.
pub type FilterConfigEnvoyPtr = *mut c_void;
/// `envoy_dynamic_module_type_network_filter_config_module_ptr`.
pub type FilterConfigModulePtr = *const c_void;
/// `envoy_dynamic_module_type_network_filter_envoy_ptr`.
pub type FilterEnvoyPtr = *mut c_void;
/// `envoy_dynamic_module_type_network_filter_module_ptr`.
pub type FilterModulePtr = *const c_void;

/// `envoy_dynamic_module_type_envoy_buffer`: bytes owned by Envoy.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

/// `envoy_dynamic_module_type_module_buffer`: bytes owned by the module, lent for one call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

impl ModuleBuffer {
    pub fn of(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: bytes.as_ptr().cast(),
            length: bytes.len(),
        }
    }
}

/// `envoy_dynamic_module_type_on_network_filter_data_status` (a C enum).
pub type DataStatus = c_int;
/// Continue to the next filters.
pub const CONTINUE: DataStatus = 0;
/// Stop the iteration over further filters for this data.
pub const STOP_ITERATION: DataStatus = 1;

/// `envoy_dynamic_module_type_network_connection_close_type` (a C enum).
pub type CloseType = c_int;
/// Flush pending write data before closing.
pub const CLOSE_FLUSH_WRITE: CloseType = 0;
/// Do not write pending data and close at once.
pub const CLOSE_ABORT: CloseType = 3;

/// `envoy_dynamic_module_type_network_connection_event` (a C enum).
pub type ConnectionEvent = c_int;
/// The peer closed the connection.
pub const EVENT_REMOTE_CLOSE: ConnectionEvent = 0;
/// Envoy closed the connection.
pub const EVENT_LOCAL_CLOSE: ConnectionEvent = 1;

extern "C" {
    pub fn envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks_size(
        filter: FilterEnvoyPtr,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks(
        filter: FilterEnvoyPtr,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_network_filter_get_write_buffer_chunks_size(
        filter: FilterEnvoyPtr,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_network_filter_get_write_buffer_chunks(
        filter: FilterEnvoyPtr,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_network_filter_drain_read_buffer(
        filter: FilterEnvoyPtr,
        length: usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_network_filter_drain_write_buffer(
        filter: FilterEnvoyPtr,
        length: usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_network_filter_append_read_buffer(
        filter: FilterEnvoyPtr,
        data: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_network_filter_append_write_buffer(
        filter: FilterEnvoyPtr,
        data: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_network_filter_inject_read_data(
        filter: FilterEnvoyPtr,
        data: ModuleBuffer,
        end_stream: bool,
    );
    pub fn envoy_dynamic_module_callback_network_filter_inject_write_data(
        filter: FilterEnvoyPtr,
        data: ModuleBuffer,
        end_stream: bool,
    );
    pub fn envoy_dynamic_module_callback_network_filter_close(
        filter: FilterEnvoyPtr,
        close_type: CloseType,
    );
    pub fn envoy_dynamic_module_callback_network_filter_get_connection_id(
        filter: FilterEnvoyPtr,
    ) -> u64;
    pub fn envoy_dynamic_module_callback_network_filter_get_remote_address(
        filter: FilterEnvoyPtr,
        address: *mut EnvoyBuffer,
        port: *mut u32,
    ) -> bool;
    /// Stops (`true`) or resumes (`false`) reading from the client; Envoy counts the calls, so
    /// each stop needs its resume. Returns an
    /// `envoy_dynamic_module_type_network_read_disable_status`.
    pub fn envoy_dynamic_module_callback_network_filter_read_disable(
        filter: FilterEnvoyPtr,
        disable: bool,
    ) -> c_int;
}
