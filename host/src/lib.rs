//! # rulebox
//!
//! Runs business and policy rules as sandboxed, metered WebAssembly components.
//!
//! A rule is a component of the world `rulebox:rule/rule@0.1.0` (see `wit/rule.wit`): it
//! receives a [`Request`](https://docs.rs/rulebox-sdk) built from the input document and
//! returns a [`Decision`] or a rule error. The host compiles each component once
//! ([`Engine::load`] gives a [`RulePre`]), configures it as a [`Rule`] (what it reads, its
//! settings, read-only directory grants, [`Limits`]), and evaluates every input in a fresh
//! instance with a fuel budget, a wall-clock deadline and a memory cap. Every [`Evaluation`]
//! says what it cost ([`Metering`]); every failure has an [`ErrorKind`] a caller can act on.
//!
//! ```no_run
//! use rulebox::{Engine, EngineConfig, Input, Rule};
//!
//! fn main() -> anyhow::Result<()> {
//!     let engine = Engine::new(EngineConfig::default())?;
//!     let pre = engine.load_file("amount_limit.wasm")?;
//!     let rule = Rule::builder("amount-limit", pre)
//!         .reads(["order.amount"])
//!         .settings(serde_json::json!({ "max": 1000 }))
//!         .build()?;
//!     let eval = rule.evaluate(&Input::from_json(r#"{"order":{"amount":1200}}"#)?);
//!     println!("{}", eval.to_json());
//!     Ok(())
//! }
//! ```
//!
//! Rules ship in [bundles](bundle): a manifest, components and data, verified (digests,
//! ed25519 signatures), compiled once (in memory and on disk), evaluated as a dependency
//! graph and combined into one verdict. A [`Registry`] holds bundles by name and swaps in new
//! revisions atomically, keeping the last good one when a load fails. A [`ResultCache`]
//! serves repeated evaluations from memory or a shared Redis.
//!
//! # Layout
//! Modules depend on each other without cycles (`tests/all/layout.rs` checks it).
//! - `engine`: the shared wasmtime engine, compiled rules ([`Engine`], [`RulePre`]), the
//!   live-component map and admission control.
//! - `artifacts`: the compiled-component disk cache (HMAC-tagged entries).
//! - `bundle`: the bundle format (manifest, files, signatures, packing) and, in private
//!   submodules, loading, evaluation with combination, and golden cases ([`Bundle`]).
//! - `registry`: bundles by name, hot-loading, rollback, events, a watched directory.
//! - `replay`: what a candidate revision would have decided on recorded decisions.
//! - `cache`: the result cache: policy, key derivation, stored entries, the lookup path, the
//!   adaptive strategy, the Redis L2 with its breaker.
//! - `rule`: configured rules and evaluation ([`Rule`], [`Decision`], [`Evaluation`]).
//! - `bench`: what a rule costs per evaluation ([`Rule::bench`]).
//! - `workers`: helper threads that share a dependency layer with the evaluating thread.
//! - `sandbox`: the per-evaluation store: limiter, captured stdio, the host `log` import.
//! - `input`: the input document, parsed once, and its projection onto each rule's `reads`.
//! - `config`: [`EngineConfig`] and [`Limits`].
//! - `error`: [`EvalError`], [`ErrorKind`], [`LoadError`], [`ConfigError`].
//! - `fs`: opening possibly hostile files without following links or blocking.
//! - `bindings`: the one `bindgen!` over the WIT.

#![deny(missing_docs)]

mod artifacts;
mod bench;
mod bindings;
pub mod bundle;
mod cache;
mod config;
mod cpu;
mod engine;
mod error;
mod fs;
mod input;
mod inspect;
mod registry;
pub mod replay;
mod rule;
mod sandbox;
mod workers;

pub use artifacts::ArtifactStats;
pub use bench::{BenchReport, Outcome};
pub use bundle::evaluate::{BundleResult, Overloaded};
pub use bundle::golden::{TestOutcome, TestReport};
pub use bundle::loaded::{
    Bundle, BundleDescription, BundleError, BundleRule, LoadOptions, LoadProgress, LoadStep,
    RuleDescription,
};
pub use cache::{
    CacheConfig, CacheConfigError, CacheError, CachePolicy, CacheStats, CacheStrategy, L2Stats,
    ResultCache, RuleCacheStats,
};
pub use config::{EngineConfig, Limits, LimitsOverride};
pub use engine::{Engine, EngineStats, RulePre};
pub use error::{ConfigError, ErrorKind, EvalError, InputError, LoadError};
pub use input::{FactPath, Input, Reads};
#[cfg(feature = "watch")]
pub use registry::Watcher;
pub use registry::{
    Activation, BundleStatus, FailureRecord, LoadFailure, Registry, RegistryConfig, RegistryError,
    RegistryEvent, Staged,
};
pub use rule::{
    Decision, Evaluation, Grant, Isolation, Metering, Rule, RuleBuilder, Upstream, Verdict,
};

// Compile-time checks: what embedders share across threads (behind an `Arc`, in a server's
// state) stays `Send + Sync`. A field that breaks this fails the build here, not in a user's.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Engine>();
    shared::<RulePre>();
    shared::<Rule>();
    shared::<Input>();
    shared::<Evaluation>();
    shared::<Bundle>();
    shared::<BundleResult>();
    shared::<Registry>();
    shared::<RegistryEvent>();
    shared::<ResultCache>();
    shared::<EvalError>();
    shared::<LoadError>();
    shared::<BundleError>();
    shared::<LoadFailure>();
    shared::<RegistryError>();
    shared::<CacheError>();
};
