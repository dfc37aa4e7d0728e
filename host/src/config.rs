//! Plain-data configuration: per-evaluation limits and engine-wide settings.

use crate::error::ConfigError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What one evaluation may use. Every field has a production default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Fuel (roughly, Wasm instructions) the rule may burn. Default 200,000,000: far more than
    /// any sane rule needs (the examples use under 100,000), yet a runaway loop stops in well
    /// under a second even if the deadline were disabled.
    pub fuel: u64,
    /// Deadline in milliseconds of running time: CPU time of the thread evaluating the rule
    /// (time spent asleep in the host counts too), enforced by epoch interruption. Time the
    /// evaluation waits for a slot or for a CPU on a busy host does not count, so a busy host
    /// never turns a rule's answer into a `timeout`; [`EngineConfig::starvation_grace_ms`]
    /// bounds the wall time. Default 100.
    pub timeout_ms: u64,
    /// Cap on the rule's linear memory in bytes. Default 64 MiB.
    pub memory_bytes: usize,
    /// Cap on reasons plus output of one decision, in bytes. Default 1 MiB.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 200_000_000,
            timeout_ms: 100,
            memory_bytes: 64 << 20,
            output_bytes: 1 << 20,
        }
    }
}

impl Limits {
    /// The deadline as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Applies `over`'s set fields on top of these.
    pub fn with(mut self, over: &LimitsOverride) -> Limits {
        if let Some(v) = over.fuel {
            self.fuel = v;
        }
        if let Some(v) = over.timeout_ms {
            self.timeout_ms = v;
        }
        if let Some(v) = over.memory_bytes {
            self.memory_bytes = v;
        }
        if let Some(v) = over.output_bytes {
            self.output_bytes = v;
        }
        self
    }

    /// Checks these limits are positive and within `max`, naming the field that is not.
    pub fn check_within(&self, max: &Limits, prefix: &str) -> Result<(), ConfigError> {
        let fields = [
            ("fuel", self.fuel as u128, max.fuel as u128),
            (
                "timeout_ms",
                self.timeout_ms as u128,
                max.timeout_ms as u128,
            ),
            (
                "memory_bytes",
                self.memory_bytes as u128,
                max.memory_bytes as u128,
            ),
            (
                "output_bytes",
                self.output_bytes as u128,
                max.output_bytes as u128,
            ),
        ];
        for (name, value, ceiling) in fields {
            let field = format!("{prefix}{name}");
            if value == 0 {
                return Err(ConfigError::new(field, "must be greater than 0"));
            }
            if value > ceiling {
                return Err(ConfigError::new(
                    field,
                    format!("{value} is above the host's maximum of {ceiling}"),
                ));
            }
        }
        Ok(())
    }
}

/// Some of [`Limits`], to lay over defaults (a bundle's, a rule's, a call's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsOverride {
    /// See [`Limits::fuel`].
    pub fuel: Option<u64>,
    /// See [`Limits::timeout_ms`].
    pub timeout_ms: Option<u64>,
    /// See [`Limits::memory_bytes`].
    pub memory_bytes: Option<usize>,
    /// See [`Limits::output_bytes`].
    pub output_bytes: Option<usize>,
}

/// Engine-wide settings, validated once by [`Engine::new`](crate::Engine::new).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Limits used when a rule or call sets none. Default: [`Limits::default`].
    pub default_limits: Limits,
    /// Ceilings no rule or call may exceed; a rule asking for more is refused at load.
    /// Default: fuel 10^10, 10 s, 1 GiB, 16 MiB.
    pub max_limits: Limits,
    /// How many rule instances may be alive at once (the pooling allocator's slots).
    /// Evaluations beyond this fail fast instead of allocating. Default 128.
    pub max_instances: u32,
    /// Core-module instances reserved per rule instance in the pool (`max_instances` times
    /// this many in all). A Rust rule uses 2-4, a Python one (componentize-py 0.25) 14. A
    /// component that needs more than this is refused at load, before compiling, naming
    /// this setting. Between 1 and 64; default 16.
    pub core_instances_per_rule: u32,
    /// Evaluations running at once, engine-wide; more wait for a slot (in no guaranteed
    /// order), so a burst queues instead of slicing the CPUs so thin that every rule runs
    /// late. At most `max_instances`. Default: the number of CPUs, at most 128.
    pub max_concurrent_evaluations: usize,
    /// How long an evaluation may wait for a slot, in milliseconds, before it ends as
    /// `overloaded` (the host's condition: never cached, never a rule's deny). Default 1000.
    pub queue_timeout_ms: u64,
    /// Wall time past a rule's `timeout_ms` after which an evaluation the host starved of CPU
    /// is stopped as `overloaded`, in milliseconds. Default 1000.
    pub starvation_grace_ms: u64,
    /// Granularity of wall-clock deadlines, in milliseconds: a background thread advances the
    /// engine's epoch this often, and a deadline fires within one tick of its time. Default 1.
    pub epoch_tick_ms: u64,
    /// Bytes of a rule's stdout and of its stderr kept per evaluation (the rest is dropped
    /// and counted). Default 16 KiB.
    pub stdio_capture_bytes: usize,
    /// Bytes of linear memory kept resident in each pooled slot between evaluations, so the
    /// next instance does not page-fault them in again. Default 256 KiB (measured to halve
    /// instantiation cost on small rules). On Linux 6.7+ (`PAGEMAP_SCAN`) a slot's reset
    /// copies back only the pages the rule wrote, up to this many bytes, and unmaps the
    /// rest; elsewhere it copies back this whole prefix.
    pub keep_resident_bytes: usize,
    /// Directory for compiled components, so restarts and new bundle revisions skip
    /// compilation. Entries are checksummed and recompiled when unsound. Default: none
    /// (compiled code is kept in memory only).
    pub cache_dir: Option<std::path::PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            default_limits: Limits::default(),
            max_limits: Limits {
                fuel: 10_000_000_000,
                timeout_ms: 10_000,
                memory_bytes: 1 << 30,
                output_bytes: 16 << 20,
            },
            max_instances: 128,
            core_instances_per_rule: 16,
            // Within the default max_instances, on any machine.
            max_concurrent_evaluations: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .min(128),
            queue_timeout_ms: 1000,
            starvation_grace_ms: 1000,
            epoch_tick_ms: 1,
            stdio_capture_bytes: 16 << 10,
            keep_resident_bytes: 256 << 10,
            cache_dir: None,
        }
    }
}

impl EngineConfig {
    /// Rejects values that would make the engine unsafe or useless, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.max_limits.check_within(
            &Limits {
                fuel: u64::MAX,
                timeout_ms: 24 * 3600 * 1000,
                memory_bytes: 4 << 30,
                output_bytes: 1 << 30,
            },
            "max_limits.",
        )?;
        self.default_limits
            .check_within(&self.max_limits, "default_limits.")?;
        if self.max_instances == 0 || self.max_instances > 10_000 {
            return Err(ConfigError::new(
                "max_instances",
                format!("{} is not between 1 and 10000", self.max_instances),
            ));
        }
        if !(1..=64).contains(&self.core_instances_per_rule) {
            return Err(ConfigError::new(
                "core_instances_per_rule",
                format!("{} is not between 1 and 64", self.core_instances_per_rule),
            ));
        }
        if self.max_concurrent_evaluations == 0
            || self.max_concurrent_evaluations > self.max_instances as usize
        {
            return Err(ConfigError::new(
                "max_concurrent_evaluations",
                format!(
                    "{} is not between 1 and max_instances ({})",
                    self.max_concurrent_evaluations, self.max_instances
                ),
            ));
        }
        for (field, ms) in [
            ("queue_timeout_ms", self.queue_timeout_ms),
            ("starvation_grace_ms", self.starvation_grace_ms),
        ] {
            if ms > 3_600_000 {
                return Err(ConfigError::new(
                    field,
                    format!("{ms} is more than an hour (3600000)"),
                ));
            }
        }
        if self.epoch_tick_ms == 0 || self.epoch_tick_ms > 1000 {
            return Err(ConfigError::new(
                "epoch_tick_ms",
                format!("{} is not between 1 and 1000", self.epoch_tick_ms),
            ));
        }
        if self.keep_resident_bytes > self.max_limits.memory_bytes {
            return Err(ConfigError::new(
                "keep_resident_bytes",
                "is larger than max_limits.memory_bytes",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        EngineConfig::default().validate().unwrap();
    }

    #[test]
    fn limits_above_max_name_the_field() {
        let config = EngineConfig {
            default_limits: Limits {
                timeout_ms: 60_000,
                ..Limits::default()
            },
            ..EngineConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert_eq!(err.field, "default_limits.timeout_ms");
        assert!(err.message.contains("above the host's maximum"), "{err}");
    }

    #[test]
    fn admission_settings_name_their_field() {
        let config = EngineConfig {
            starvation_grace_ms: 4_000_000,
            ..EngineConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "starvation_grace_ms: 4000000 is more than an hour (3600000)"
        );
        let config = EngineConfig {
            max_concurrent_evaluations: 129,
            ..EngineConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().field,
            "max_concurrent_evaluations"
        );
    }

    #[test]
    fn zero_limit_is_refused() {
        let err = Limits {
            fuel: 0,
            ..Limits::default()
        }
        .check_within(&EngineConfig::default().max_limits, "limits.")
        .unwrap_err();
        assert_eq!(err.to_string(), "limits.fuel: must be greater than 0");
    }

    #[test]
    fn override_applies_only_set_fields() {
        let l = Limits::default().with(&LimitsOverride {
            timeout_ms: Some(5),
            ..Default::default()
        });
        assert_eq!(l.timeout_ms, 5);
        assert_eq!(l.fuel, Limits::default().fuel);
    }
}
