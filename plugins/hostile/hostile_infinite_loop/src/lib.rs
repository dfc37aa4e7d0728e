//! Hostile rule: spins forever without calling the host. Must end in `timeout` or
//! `fuel-exhausted`, whichever limit is lower.
use rulebox_sdk::prelude::*;
pub struct Spin;
impl Rule for Spin {
    fn evaluate(_: &Request) -> Result<Decision, RuleError> {
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
}
export_rule!(Spin);
