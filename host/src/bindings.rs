//! The one place that runs `wasmtime::component::bindgen!` over `wit/rule.wit`.
//!
//! Everything else in the crate uses these generated types through this module; none of them
//! are public, so the WIT can grow a new version without breaking embedders.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "rulebox:rule/rule@0.1.0",
    // The sandbox state holds wasmtime-wasi's context, which must be `Send` to live in a
    // store that moves between the threads of a blocking pool.
    require_store_data_send: true,
});

pub use self::rulebox::rule::types;
