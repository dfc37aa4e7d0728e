//! Hostile rule: returns an 8 MiB reason. Must end in `output-too-large`.
use rulebox_sdk::prelude::*;
pub struct HugeReason;
impl Rule for HugeReason {
    fn evaluate(_: &Request) -> Result<Decision, RuleError> {
        Ok(Decision::deny().reason("x".repeat(8 << 20)))
    }
}
export_rule!(HugeReason);
