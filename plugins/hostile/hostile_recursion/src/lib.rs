//! Hostile rule: unbounded recursion on the Wasm call stack. Must end in `stack-overflow`.
use rulebox_sdk::prelude::*;
pub struct Recursion;

// No locals have their address taken, so every frame lives on the engine's native Wasm stack
// (not the guest's shadow stack in linear memory), and `rotate_left` keeps LLVM from turning
// the recursion into a loop.
#[inline(never)]
fn down(n: u64, stop: u64) -> u64 {
    if n == stop {
        return 0;
    }
    down(n.wrapping_add(1), stop).rotate_left(1) ^ n
}

impl Rule for Recursion {
    fn evaluate(req: &Request) -> Result<Decision, RuleError> {
        let stop: u64 = req.setting_or("stop", u64::MAX)?;
        Ok(Decision::allow().score(down(0, stop) as f64))
    }
}
export_rule!(Recursion);
