//! Hostile rule: panics with a distinctive message. Must end in `trap` carrying the message.
use rulebox_sdk::prelude::*;
pub struct Panic;
impl Rule for Panic {
    fn evaluate(req: &Request) -> Result<Decision, RuleError> {
        let code: String = req.setting_or("code", "7f3a".to_owned())?;
        panic!("hostile_panic went off (code {code})");
    }
}
export_rule!(Panic);
