//! Hostile rule: sleeps for an hour (blocking in the host, where epoch interruption cannot
//! reach), then allows. Must end in `timeout` near its deadline.
use rulebox_sdk::prelude::*;
pub struct Sleep;
impl Rule for Sleep {
    fn evaluate(req: &Request) -> Result<Decision, RuleError> {
        let seconds: u64 = req.setting_or("seconds", 3600)?;
        std::thread::sleep(std::time::Duration::from_secs(seconds));
        Ok(Decision::allow())
    }
}
export_rule!(Sleep);
