//! Hostile rule: busy-waits on the wall clock for an hour (calling into WASI's clock each
//! turn). Must end in `timeout` near its deadline.
use rulebox_sdk::prelude::*;
pub struct BusyWait;
impl Rule for BusyWait {
    fn evaluate(_: &Request) -> Result<Decision, RuleError> {
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(3600) {}
        Ok(Decision::allow())
    }
}
export_rule!(BusyWait);
