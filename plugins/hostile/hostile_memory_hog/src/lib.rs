//! Hostile rule: allocates (and touches) 1 MiB blocks until refused. Must end in
//! `memory-limit`, whatever the guest does after the refusal.
use rulebox_sdk::prelude::*;
pub struct MemoryHog;
impl Rule for MemoryHog {
    fn evaluate(_: &Request) -> Result<Decision, RuleError> {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        loop {
            blocks.push(vec![0xa5; 1 << 20]);
            std::hint::black_box(&blocks);
        }
    }
}
export_rule!(MemoryHog);
