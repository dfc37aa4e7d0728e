//! Hostile rule: returns an output that is not JSON. Must end in `invalid-output`.
use rulebox_sdk::prelude::*;
pub struct BadOutput;
impl Rule for BadOutput {
    fn evaluate(_: &Request) -> Result<Decision, RuleError> {
        Ok(Decision::allow().output_raw("{not json"))
    }
}
export_rule!(BadOutput);
