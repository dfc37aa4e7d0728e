//! # rulebox-sdk
//!
//! Write rulebox rules in Rust. A rule is a type implementing [`Rule`]; [`export_rule!`] makes
//! it the component's `evaluate` export when built for `wasm32-wasip2`. The same crate builds
//! natively, so rule logic is unit-tested with plain `cargo test`, no Wasm toolchain needed.
//!
//! ```
//! use rulebox_sdk::prelude::*;
//!
//! struct AmountLimit;
//! impl Rule for AmountLimit {
//!     fn evaluate(req: &Request) -> Result<Decision, RuleError> {
//!         let amount: f64 = req.fact("order.amount")?;
//!         let max: f64 = req.setting_or("max", 5000.0)?;
//!         Ok(if amount > max {
//!             Decision::deny().reason(format!("{amount} over {max}"))
//!         } else {
//!             Decision::allow()
//!         })
//!     }
//! }
//! export_rule!(AmountLimit);
//!
//! // A native unit test of the same logic:
//! let req = Request::new().with_fact("order.amount", 7000).with_settings(serde_json::json!({"max": 5000}));
//! let d = AmountLimit::evaluate(&req).unwrap();
//! assert_eq!(d.verdict(), Verdict::Deny);
//! ```
//!
//! # Guest footprint
//! Instantiation cost dominates a rule's evaluation, and most of it is touching memory. Build
//! with a 64 KiB stack (`-Clink-arg=-zstack-size=65536`, which `plugins/build.sh` sets) and
//! `opt-level = "s"`, `lto = true`, `panic = "abort"`; avoid large statics.
//!
//! A rule that needs no files, clocks or environment can be built *lean*, for
//! `wasm32-unknown-unknown` with `wasm-component-ld` as the linker: the component then
//! imports only `rulebox:rule`. The SDK's `lean-allocator` feature (default) installs an
//! allocator that uses the initial memory before growing it; link with
//! `-Clink-arg=--initial-memory=131072` (see `plugins/build.sh`).
//!
//! In every Wasm build the `arena` feature (default) puts a 32 KiB bump arena in front of the
//! general allocator: an evaluation's short-lived blocks cost a pointer bump, and the arena
//! starts over once they are all freed. State that outlives an evaluation belongs in
//! [`persistent`]; `init` and [`Request::settings_shared`] already are ([`in_arena`] tells
//! where a value lives). To bring your own `#[global_allocator]`, turn off `arena` and
//! `lean-allocator`.

#![deny(missing_docs)]

// Lets the generated glue name this crate by the path rule crates use.
extern crate self as rulebox_sdk;

#[cfg(any(test, target_arch = "wasm32"))]
mod arena;
mod decision;
mod log;
mod request;
mod value;

pub use decision::{Decision, Verdict};
pub use log::{Level, enabled as log_enabled, log};
pub use request::{Request, RuleError};
pub use value::Value;

/// A rule: one pure function from a request to a decision.
pub trait Rule {
    /// Decides on one request. Return [`RuleError::invalid_input`] when the input lacks or
    /// mistypes something, [`RuleError::failed`] when no decision can be reached.
    fn evaluate(req: &Request) -> Result<Decision, RuleError>;
}

/// A rule that loads what it needs once (a list, a table) instead of on every evaluation.
///
/// Export it with `export_rule!(MyRule, init)`. The host calls `init` once per bundle
/// revision, at load, where the rule's grants are readable, then snapshots the instance:
/// every evaluation starts from the state `init` left, in a fresh instance, with no grants.
/// Keep what you load in a `static` (a `std::sync::OnceLock`). A host that predates `init`
/// never calls it, so `evaluate` should load lazily when it finds nothing loaded.
///
/// In `init`, do not print or read clocks for later use: open handles and the time are not
/// part of the snapshot (a `log` call is fine).
pub trait Init {
    /// Loads, given a request that carries only the rule's settings
    /// ([`Request::settings`], [`Request::setting_or`]). An error refuses the bundle's load
    /// with its message.
    fn init(req: &Request) -> Result<(), RuleError>;
}

/// Runs `f` with its allocations kept out of the SDK's per-evaluation arena: for state that
/// outlives the evaluation (a cache in a `static`, filled lazily in `evaluate`).
///
/// In a Wasm build with the `arena` feature (default), an evaluation's blocks come from a
/// bump arena that starts over once all of them are freed, which is far cheaper than a
/// general allocator. A block that outlives its evaluation keeps the arena from starting
/// over, which is safe but leaves later evaluations of a reused instance on the general
/// allocator. `init` ([`Init`]) and [`Request::settings_shared`] already run this way.
/// Natively, and without the feature, it just runs `f`.
pub fn persistent<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(all(target_arch = "wasm32", feature = "arena"))]
    {
        arena::ALLOCATOR.persistent(f)
    }
    #[cfg(not(all(target_arch = "wasm32", feature = "arena")))]
    {
        f()
    }
}

/// The bytes of a file under one of the rule's directory grants, by the path the rule sees
/// (`/data/list.txt`), through the host's `rulebox:rule/grants` rather than WASI: so a lean
/// rule (one built without WASI) can load its data in [`Init`]. Readable wherever the rule's
/// grants are: in `init`, and in every evaluation of a rule without `init`. The host refuses
/// a path under no grant, one that leaves its grant, and a file larger than the rule's memory
/// limit, with a message naming the path. Natively (tests) it reads the path as is.
pub fn read_grant(path: &str) -> Result<Vec<u8>, RuleError> {
    #[cfg(target_arch = "wasm32")]
    {
        __private::initializer::rulebox::rule::grants::read(path).map_err(RuleError::failed)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::fs::read(path).map_err(|e| RuleError::failed(format!("cannot read `{path}`: {e}")))
    }
}

/// Whether `value` lives in the SDK's per-evaluation arena (see [`persistent`]); always
/// `false` natively and without the `arena` feature. For checking that state meant to
/// outlive an evaluation was made outside it: a block left in the arena keeps the arena
/// from starting over.
pub fn in_arena<T: ?Sized>(value: &T) -> bool {
    #[cfg(all(target_arch = "wasm32", feature = "arena"))]
    {
        arena::ALLOCATOR.contains((value as *const T).cast::<u8>().cast_mut())
    }
    #[cfg(not(all(target_arch = "wasm32", feature = "arena")))]
    {
        let _ = value;
        false
    }
}

/// Everything a rule usually needs.
pub mod prelude {
    pub use crate::{Decision, Init, Level, Request, Rule, RuleError, Value, Verdict, export_rule};
    pub use crate::{debug, error, info, trace, warn};
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod __private;

#[cfg(all(
    target_arch = "wasm32",
    not(target_os = "wasi"),
    feature = "lean-allocator"
))]
mod lean;

/// Makes a [`Rule`] type the component's `evaluate` export. Does nothing in native builds, so
/// the crate still compiles (and unit-tests) on the host.
///
/// - `export_rule!(MyRule)`: `evaluate` only.
/// - `export_rule!(MyRule, init)`: also exports `init`, running `MyRule`'s [`Init`].
/// - `export_rule!(MyRule, settings = MySettings)`: also exports `init`, which parses the
///   settings as `MySettings` at load ([`Request::settings_shared`]), so evaluations find
///   them parsed and bad settings refuse the load.
/// - `export_rule!(MyRule, init, settings = MySettings)`: both.
#[macro_export]
macro_rules! export_rule {
    ($rule:ty, init) => {
        $crate::export_rule!(@init $rule, |settings| $crate::__private::init::<$rule>(settings));
    };
    ($rule:ty, settings = $settings:ty) => {
        $crate::export_rule!(@init $rule, |settings| {
            $crate::__private::init_settings::<$settings>(settings, |_| Ok(()))
        });
    };
    ($rule:ty, init, settings = $settings:ty) => {
        $crate::export_rule!(@init $rule, |settings| {
            $crate::__private::init_settings::<$settings>(settings, <$rule as $crate::Init>::init)
        });
    };
    (@init $rule:ty, $init:expr) => {
        $crate::export_rule!($rule);
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __RuleboxInit;
            impl $crate::__private::initializer::Guest for __RuleboxInit {
                fn init(
                    settings: ::std::string::String,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    let init: fn(::std::string::String) -> ::core::result::Result<(), ::std::string::String> = $init;
                    init(settings)
                }
            }
            $crate::__private::initializer::export!(__RuleboxInit);
        };
    };
    ($rule:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __RuleboxExport;
            impl $crate::__private::Guest for __RuleboxExport {
                fn evaluate(
                    request: $crate::__private::Request,
                ) -> ::core::result::Result<$crate::__private::Decision, $crate::__private::RuleError>
                {
                    $crate::__private::evaluate::<$rule>(request)
                }
            }
            $crate::__private::export!(__RuleboxExport);
        };
    };
}
