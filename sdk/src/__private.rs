//! The Wasm glue behind [`export_rule!`](crate::export_rule): generated bindings and the
//! conversions between them and the SDK's own types. Not a public API.

wit_bindgen::generate!({
    world: "rulebox:rule/rule@0.1.0",
    path: "../wit",
    pub_export_macro: true,
    export_macro_name: "__rulebox_export",
    default_bindings_module: "::rulebox_sdk::__private",
    runtime_path: "::rulebox_sdk::__private::wit_bindgen::rt",
});

#[doc(hidden)]
pub use __rulebox_export as export;

/// The optional `init` export (the `initializer` world).
pub mod initializer {
    wit_bindgen::generate!({
        world: "rulebox:rule/initializer@0.1.0",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__rulebox_export_init",
        default_bindings_module: "::rulebox_sdk::__private::initializer",
        runtime_path: "::rulebox_sdk::__private::wit_bindgen::rt",
    });

    #[doc(hidden)]
    pub use __rulebox_export_init as export;
}

/// Runs `R`'s [`Init`](crate::Init) with the rule's settings from the host.
pub fn init<R: crate::Init>(settings: String) -> Result<(), String> {
    init_with(settings, R::init)
}

/// Parses the settings as `S` ([`Request::settings_shared`](crate::Request::settings_shared))
/// for the snapshot, then runs `more` (a rule's own [`Init`](crate::Init), if it has one).
pub fn init_settings<S>(
    settings: String,
    more: fn(&crate::Request) -> Result<(), crate::RuleError>,
) -> Result<(), String>
where
    S: serde::de::DeserializeOwned + Send + Sync + 'static,
{
    init_with(settings, |req| {
        req.settings_shared::<S>()?;
        more(req)
    })
}

fn init_with(
    settings: String,
    run: impl FnOnce(&crate::Request) -> Result<(), crate::RuleError>,
) -> Result<(), String> {
    let req = crate::Request::from_parts(Vec::new(), None, Vec::new(), settings);
    // What `init` loads is kept for every evaluation: out of the per-evaluation arena.
    crate::persistent(|| run(&req)).map_err(|e| match e {
        crate::RuleError::InvalidInput(m) | crate::RuleError::Failed(m) => m,
    })
}
pub use wit_bindgen;

use crate::Rule;
use rulebox::rule::types as wit;

fn verdict_to_wit(v: crate::Verdict) -> wit::Verdict {
    match v {
        crate::Verdict::Allow => wit::Verdict::Allow,
        crate::Verdict::Deny => wit::Verdict::Deny,
        crate::Verdict::Review => wit::Verdict::Review,
        crate::Verdict::Abstain => wit::Verdict::Abstain,
    }
}

fn decision_from_wit(d: wit::Decision) -> crate::Decision {
    crate::Decision::from_parts(
        match d.verdict {
            wit::Verdict::Allow => crate::Verdict::Allow,
            wit::Verdict::Deny => crate::Verdict::Deny,
            wit::Verdict::Review => crate::Verdict::Review,
            wit::Verdict::Abstain => crate::Verdict::Abstain,
        },
        d.score,
        d.reasons,
        d.output,
    )
}

fn value_from_wit(v: wit::Value) -> crate::Value {
    match v {
        wit::Value::Null => crate::Value::Null,
        wit::Value::Boolean(b) => crate::Value::Bool(b),
        wit::Value::Integer(i) => crate::Value::Integer(i),
        wit::Value::Float(f) => crate::Value::Float(f),
        wit::Value::Text(s) => crate::Value::Text(s),
        wit::Value::Json(s) => crate::Value::Json(s),
    }
}

pub(crate) fn host_log(level: crate::Level, message: &str) {
    let level = match level {
        crate::Level::Trace => wit::LogLevel::Trace,
        crate::Level::Debug => wit::LogLevel::Debug,
        crate::Level::Info => wit::LogLevel::Info,
        crate::Level::Warn => wit::LogLevel::Warn,
        crate::Level::Error => wit::LogLevel::Error,
    };
    rulebox::rule::host::log(level, message);
}

/// Runs `R` on a request from the host.
pub fn evaluate<R: Rule>(request: Request) -> Result<Decision, RuleError> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        // The panic message goes to the host's log before the trap, so the host can report
        // why the rule died instead of a bare "unreachable".
        std::panic::set_hook(Box::new(|info| {
            host_log(crate::Level::Error, &format!("rule {info}"));
        }));
    });
    let req = crate::Request::from_parts(
        request
            .facts
            .into_iter()
            .map(|f| (f.path, value_from_wit(f.value)))
            .collect(),
        request.document,
        request
            .upstream
            .into_iter()
            .map(|u| (u.rule, decision_from_wit(u.decision)))
            .collect(),
        request.settings,
    );
    match R::evaluate(&req) {
        Ok(d) => {
            let (verdict, score, reasons, output) = d.into_parts();
            Ok(wit::Decision {
                verdict: verdict_to_wit(verdict),
                score,
                reasons,
                output,
            })
        }
        Err(crate::RuleError::InvalidInput(m)) => Err(wit::RuleError::InvalidInput(m)),
        Err(crate::RuleError::Failed(m)) => Err(wit::RuleError::Failed(m)),
    }
}
