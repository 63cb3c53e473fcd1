//! The event hooks Envoy calls (the `envoy_dynamic_module_on_*` symbols of the ABI): module load,
//! network filter configuration new/destroy, and per connection new, new connection, read, write,
//! event, write buffer above/below its watermarks, and destroy. They own the conversion between
//! Envoy's raw pointers and the module's boxed values, and the rule that no panic crosses into
//! Envoy: each hook runs under `catch_unwind`, and a panic closes only the connection it happened
//! on (or refuses the configuration). Deciding and parsing belong to `filter.rs`.

#![allow(unsafe_code)]

use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::abi::{
    self, ConnectionEvent, DataStatus, EnvoyBuffer, FilterConfigEnvoyPtr, FilterConfigModulePtr,
    FilterEnvoyPtr, FilterModulePtr,
};
use crate::config::FilterConfig;
use crate::envoy::{Buffer, EnvoyConnection};
use crate::filter::Filter;

/// The text of a panic's payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Called once when Envoy loads the module; returns the ABI version it was built against.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    abi::ABI_VERSION.as_ptr().cast()
}

/// Loads a filter configuration; null refuses it (the reason goes to Envoy's stderr).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_config_new(
    _config_envoy: FilterConfigEnvoyPtr,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> FilterConfigModulePtr {
    let text: &[u8] = if config.ptr.is_null() {
        &[]
    } else {
        // SAFETY: Envoy owns the configuration bytes and keeps them valid during this call.
        unsafe { std::slice::from_raw_parts(config.ptr.cast::<u8>(), config.length) }
    };
    match catch_unwind(|| FilterConfig::load(text)) {
        Ok(Ok(config)) => Arc::into_raw(Arc::new(config)).cast(),
        Ok(Err(error)) => {
            eprintln!("axoneme envoy filter: configuration refused: {error}");
            std::ptr::null()
        }
        Err(payload) => {
            eprintln!(
                "axoneme envoy filter: configuration refused: panic while loading it: {}",
                panic_text(payload.as_ref())
            );
            std::ptr::null()
        }
    }
}

/// Releases a filter configuration (connections still open keep their own reference).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_config_destroy(
    config: FilterConfigModulePtr,
) {
    if config.is_null() {
        return;
    }
    // SAFETY: `config` came from `Arc::into_raw` in `..._config_new` and Envoy destroys each
    // configuration once.
    drop(unsafe { Arc::from_raw(config.cast::<FilterConfig>()) });
}

/// Creates the filter of a new connection.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_new(
    config: FilterConfigModulePtr,
    _filter_envoy: FilterEnvoyPtr,
) -> FilterModulePtr {
    if config.is_null() {
        return std::ptr::null();
    }
    let config = config.cast::<FilterConfig>();
    // SAFETY: `config` came from `Arc::into_raw` and Envoy keeps the configuration alive while
    // it creates filters from it; the count is raised before a new reference is made from it.
    let config = unsafe {
        Arc::increment_strong_count(config);
        Arc::from_raw(config)
    };
    let filter = Box::new(Filter::new(config));
    Box::into_raw(filter).cast_const().cast()
}

/// Runs `hook` on the filter behind `filter`, closing the connection if it panics.
fn with_filter(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    hook: impl FnOnce(&mut Filter, &mut EnvoyConnection) -> DataStatus,
) -> DataStatus {
    // SAFETY: `filter` came from `Box::into_raw` in `..._filter_new` and Envoy calls the hooks
    // of one connection on one thread, never after `..._filter_destroy`.
    let filter = unsafe { &mut *filter.cast_mut().cast::<Filter>() };
    let mut connection = EnvoyConnection::new(envoy);
    let status = match catch_unwind(AssertUnwindSafe(|| hook(filter, &mut connection))) {
        Ok(status) => status,
        Err(payload) => {
            let why = panic_text(payload.as_ref());
            eprintln!("axoneme envoy filter: panic, closing the connection: {why}");
            let failed = catch_unwind(AssertUnwindSafe(|| filter.fail(&mut connection, &why)));
            if failed.is_err() {
                eprintln!("axoneme envoy filter: panic while closing the connection");
                connection.close(abi::CLOSE_ABORT);
            }
            abi::STOP_ITERATION
        }
    };
    // The filter is no longer borrowed: the close (and the event hook Envoy calls from it) may
    // come.
    connection.finish();
    status
}

/// The connection is established: decide it.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_new_connection(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
) -> DataStatus {
    with_filter(envoy, filter, |filter, connection| {
        filter.on_new_connection(connection)
    })
}

/// Bytes arrived from the client.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_read(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    _data_length: usize,
    end_stream: bool,
) -> DataStatus {
    with_filter(envoy, filter, |filter, connection| {
        filter.on_data(connection, Buffer::Read, end_stream)
    })
}

/// Bytes are on their way to the client.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_write(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    _data_length: usize,
    end_stream: bool,
) -> DataStatus {
    with_filter(envoy, filter, |filter, connection| {
        filter.on_data(connection, Buffer::Write, end_stream)
    })
}

/// A connection event: a close stops the parsing.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_event(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    event: ConnectionEvent,
) {
    if event == abi::EVENT_REMOTE_CLOSE || event == abi::EVENT_LOCAL_CLOSE {
        with_filter(envoy, filter, |filter, _| {
            filter.on_close();
            abi::CONTINUE
        });
    }
}

/// The bytes waiting to be written to the client passed the connection's buffer limit: reading
/// from the client stops, so that a client that sends requests and does not read their replies
/// (denials this filter writes itself among them) cannot make Envoy hold more and more of them.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_above_write_buffer_high_watermark(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
) {
    with_filter(envoy, filter, |filter, connection| {
        filter.on_client_backlog(connection, true);
        abi::CONTINUE
    });
}

/// The client has read enough of what was waiting for it: reading from it resumes.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_below_write_buffer_low_watermark(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
) {
    with_filter(envoy, filter, |filter, connection| {
        filter.on_client_backlog(connection, false);
        abi::CONTINUE
    });
}

/// The connection's filter is destroyed.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_destroy(filter: FilterModulePtr) {
    if filter.is_null() {
        return;
    }
    // SAFETY: `filter` came from `Box::into_raw` in `..._filter_new`; Envoy destroys it once.
    let filter = unsafe { Box::from_raw(filter.cast_mut().cast::<Filter>()) };
    if catch_unwind(AssertUnwindSafe(|| drop(filter))).is_err() {
        eprintln!("axoneme envoy filter: panic while releasing a connection");
    }
}
