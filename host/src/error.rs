//! Errors a caller can act on.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// What went wrong in one evaluation, in a form a caller can branch on.
///
/// The spelling (`fuel-exhausted`, ...) is part of the JSON output of the CLI and the server
/// and does not change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The rule said its input lacks or mistypes something it needs.
    InvalidInput,
    /// The rule said it could not reach a decision.
    Failed,
    /// The guest trapped (a panic, an unreachable, an out-of-bounds access, ...).
    Trap,
    /// The guest's call stack grew past the engine's maximum.
    StackOverflow,
    /// The guest used up its fuel (instruction) budget.
    FuelExhausted,
    /// The guest ran past its wall-clock deadline.
    Timeout,
    /// The guest asked for more linear memory than its cap allows.
    MemoryLimit,
    /// The decision's reasons and output together exceed the output limit.
    OutputTooLarge,
    /// The decision is malformed: its output is not JSON, or its score is not finite.
    InvalidOutput,
    /// The component is not a `rulebox:rule@0.1.0` rule (or not a component at all).
    IncompatibleComponent,
    /// The host was too busy to run the rule (no evaluation slot in time, or starved of CPU
    /// past its grace). The host's condition, not the rule's: never cached, never combined
    /// into a verdict; retry later.
    Overloaded,
}

impl ErrorKind {
    /// The stable kebab-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::Failed => "failed",
            ErrorKind::Trap => "trap",
            ErrorKind::StackOverflow => "stack-overflow",
            ErrorKind::FuelExhausted => "fuel-exhausted",
            ErrorKind::Timeout => "timeout",
            ErrorKind::MemoryLimit => "memory-limit",
            ErrorKind::OutputTooLarge => "output-too-large",
            ErrorKind::InvalidOutput => "invalid-output",
            ErrorKind::IncompatibleComponent => "incompatible-component",
            ErrorKind::Overloaded => "overloaded",
        }
    }

    /// Whether this error came from a host-enforced limit rather than the rule's own logic.
    ///
    /// Such results depend on the machine's load as much as on the input, so they must not
    /// be cached or treated as the rule's answer.
    pub fn is_limit(self) -> bool {
        matches!(
            self,
            ErrorKind::FuelExhausted
                | ErrorKind::Timeout
                | ErrorKind::MemoryLimit
                | ErrorKind::StackOverflow
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an evaluation did not produce a decision.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The rule returned `rule-error::invalid-input`.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The rule returned `rule-error::failed`.
    #[error("rule failed: {0}")]
    Failed(String),
    /// The guest trapped; `detail` carries the last thing it wrote to stderr or logged at
    /// error level (where a Rust panic message lands).
    #[error("rule trapped: {message}{}", detail.as_deref().map(|d| format!(" (rule said: {d})")).unwrap_or_default())]
    Trap {
        /// wasmtime's description of the trap.
        message: String,
        /// The guest's last words, if any.
        detail: Option<String>,
    },
    /// The guest's call stack overflowed.
    #[error("rule overflowed its call stack")]
    StackOverflow,
    /// The guest used up its fuel budget.
    #[error("rule used up its fuel budget of {budget}")]
    FuelExhausted {
        /// The budget it had.
        budget: u64,
    },
    /// The guest ran past its deadline.
    #[error("rule ran past its deadline of {}ms", deadline.as_millis())]
    Timeout {
        /// The deadline it had.
        deadline: Duration,
    },
    /// The guest asked for more memory than its cap.
    #[error("rule asked for {requested} bytes of memory, over its cap of {limit} bytes")]
    MemoryLimit {
        /// The cap.
        limit: usize,
        /// The size it asked to grow to.
        requested: usize,
    },
    /// Reasons plus output are larger than allowed.
    #[error("rule returned {size} bytes of reasons and output, over the limit of {limit}")]
    OutputTooLarge {
        /// The size returned.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The decision was malformed.
    #[error("rule returned an invalid decision: {0}")]
    InvalidOutput(String),
    /// The component does not implement the rule world.
    #[error("{0}")]
    Incompatible(#[from] LoadError),
    /// The host was too busy to run the rule.
    #[error("host overloaded: {0}")]
    Overloaded(String),
}

/// `{"kind": "...", "message": "..."}`: what the CLI and the server print.
impl Serialize for EvalError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("kind", &self.kind())?;
        map.serialize_entry("message", &self.to_string())?;
        map.end()
    }
}

impl EvalError {
    /// The kind, for branching and for JSON.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EvalError::InvalidInput(_) => ErrorKind::InvalidInput,
            EvalError::Failed(_) => ErrorKind::Failed,
            EvalError::Trap { .. } => ErrorKind::Trap,
            EvalError::StackOverflow => ErrorKind::StackOverflow,
            EvalError::FuelExhausted { .. } => ErrorKind::FuelExhausted,
            EvalError::Timeout { .. } => ErrorKind::Timeout,
            EvalError::MemoryLimit { .. } => ErrorKind::MemoryLimit,
            EvalError::OutputTooLarge { .. } => ErrorKind::OutputTooLarge,
            EvalError::InvalidOutput(_) => ErrorKind::InvalidOutput,
            EvalError::Incompatible(_) => ErrorKind::IncompatibleComponent,
            EvalError::Overloaded(_) => ErrorKind::Overloaded,
        }
    }
}

/// Why a component could not be loaded as a rule.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {message}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        message: String,
    },
    /// The bytes are not a WebAssembly binary.
    #[error("not a WebAssembly binary (the file does not start with the `\\0asm` magic)")]
    NotWasm,
    /// The bytes are a core module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component: build the rule for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    /// wasmtime could not compile the component.
    #[error("component does not compile: {0}")]
    Compile(String),
    /// The component does not export what the rule world needs.
    #[error("component is not a rulebox:rule@0.1.0 rule: {0}")]
    MissingExport(String),
    /// The component imports something the sandbox does not provide; found before
    /// compiling.
    #[error("component imports `{import}`, which the rule sandbox does not provide: {fix}")]
    UnexpectedImport {
        /// The import, as the component names it (`wasi:http/outgoing-handler@0.2.3`).
        import: String,
        /// What the sandbox provides and what to change.
        fix: String,
    },
    /// One instance of the component creates more core instances than the engine's pool
    /// reserves per rule; found before compiling.
    #[error(
        "component creates {needs} core instances per evaluation, more than the engine reserves per rule ({limit}): raise `EngineConfig::core_instances_per_rule` to at least {needs}"
    )]
    TooManyCoreInstances {
        /// What one instance of it creates.
        needs: u32,
        /// `core_instances_per_rule`.
        limit: u32,
    },
    /// The linker could not satisfy the component's imports.
    #[error("component cannot be linked in the rule sandbox: {0}")]
    Link(String),
    /// The rule's `init` failed (its error, a trap, a limit) or could not be snapshot.
    #[error("init: {0}")]
    Init(String),
}

/// `{"kind": "incompatible-component", "message": "..."}`, as the evaluation it prevents.
impl Serialize for LoadError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        EvalError::Incompatible(self.clone()).serialize(s)
    }
}

/// Bad configuration, named by the field at fault.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The field, as spelled in configuration (`limits.timeout_ms`, `grants[0]`, ...).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The input document could not be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("invalid input JSON: {0}")]
pub struct InputError(pub(crate) String);
