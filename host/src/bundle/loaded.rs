//! A loaded bundle: its rules, its description, and why a load failed.

use super::source::SIGNATURE_FILE;
use super::{
    BundleSource, Combine, Manifest, ManifestError, OnError, SignatureError, SourceError,
    SourceLimits, TestCase, TrustedKey,
};
use crate::cache::{CachePolicy, ResultCache, RuleCache};
use crate::error::LoadError;
use crate::input::Input;
use crate::rule::{Evaluation, Rule, Upstream};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The step of loading a bundle that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadStep {
    /// Reading the files or archive, parsing and checking the manifest.
    Read,
    /// Checking the signature.
    Verify,
    /// Compiling and checking the components.
    Compile,
    /// Running the golden cases.
    Test,
}

/// Why a bundle could not be loaded.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The files or the archive.
    #[error("{0}")]
    Source(#[from] SourceError),
    /// The manifest.
    #[error("bundle.toml: {0}")]
    Manifest(#[from] ManifestError),
    /// The signature.
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
    /// A component is not a rule.
    #[error("rule `{rule}`: component: {error}")]
    Component {
        /// The rule.
        rule: String,
        /// Why.
        error: LoadError,
    },
    /// Golden cases failed.
    #[error("{failed} of {total} golden cases failed: {}", first.as_deref().unwrap_or(""))]
    Tests {
        /// How many failed.
        failed: usize,
        /// How many ran.
        total: usize,
        /// The first failure, described.
        first: Option<String>,
    },
}

/// `{"step": "read", "message": "..."}`: what the CLI and the server print.
impl Serialize for BundleError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("step", &self.step())?;
        map.serialize_entry("message", &self.to_string())?;
        map.end()
    }
}

impl BundleError {
    /// The loading step this error belongs to.
    pub fn step(&self) -> LoadStep {
        match self {
            BundleError::Source(_) | BundleError::Manifest(_) => LoadStep::Read,
            BundleError::Signature(_) => LoadStep::Verify,
            BundleError::Component { .. } => LoadStep::Compile,
            BundleError::Tests { .. } => LoadStep::Test,
        }
    }
}

/// A compile-progress callback: (components done, distinct components in all, a rule that
/// uses the one just done). Rules sharing a component compile it once.
pub type LoadProgress = Arc<dyn Fn(usize, usize, &str) + Send + Sync>;

/// How bundles are checked when loaded, and how they evaluate.
#[derive(Clone)]
pub struct LoadOptions {
    /// Keys whose signatures are accepted. When any is given, every bundle must carry a
    /// valid signature by one of them.
    pub trusted_keys: Vec<TrustedKey>,
    /// Refuse bundles without a valid signature by a trusted key, even when no key is
    /// trusted (then every bundle is refused, saying so). Default false.
    pub require_signature: bool,
    /// Limits on the bundle's files.
    pub source_limits: SourceLimits,
    /// Called after each distinct component compiles: (done, total, a rule using it).
    pub progress: Option<LoadProgress>,
    /// The result cache the bundle's rules use, per their `cache` policies. Default: none.
    pub cache: Option<Arc<ResultCache>>,
    /// [`Bundle::evaluate`] runs a dependency layer on the calling thread (inside
    /// `block_in_place`, on a multi-thread tokio runtime), instead of handing it to tokio's
    /// blocking pool, when its rules' recent cost adds up to less than this many
    /// microseconds of CPU, and also when the layer is worth sharing with the engine's
    /// helper threads (several measured rules with enough work between them): the calling
    /// thread is then one of those running it, and a hop would only add a wake-up. A
    /// rule's recent cost is the larger of a moving average of its CPU time and the lesser
    /// of its last two evaluations', so two slow evaluations in a row send it back to the
    /// pool at once, one alone (cold caches) does not; a rule not measured yet, or one that
    /// may wait on Redis, always goes to the pool.
    ///
    /// Default [`LoadOptions::DEFAULT_INLINE_BELOW_US`]: a hand-off to the blocking pool
    /// costs tens of microseconds, more than most rules. 0 always uses the pool: right for
    /// a server whose async workers have other requests to serve (`block_in_place` hands
    /// them to another thread); `rulebox serve` sets 0, measured in `benches/http.rs`.
    pub inline_below_us: u64,
}

impl LoadOptions {
    /// The default of [`LoadOptions::inline_below_us`].
    pub const DEFAULT_INLINE_BELOW_US: u64 = 200;
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            trusted_keys: Vec::new(),
            require_signature: false,
            source_limits: SourceLimits::default(),
            progress: None,
            cache: None,
            inline_below_us: LoadOptions::DEFAULT_INLINE_BELOW_US,
        }
    }
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("trusted_keys", &self.trusted_keys)
            .field("require_signature", &self.require_signature)
            .field("source_limits", &self.source_limits)
            .field("cache", &self.cache.is_some())
            .field("inline_below_us", &self.inline_below_us)
            .finish_non_exhaustive()
    }
}

/// One rule of a loaded bundle.
pub struct BundleRule {
    /// The configured rule.
    pub rule: Rule,
    /// Indices of the rules it depends on.
    pub depends_on: Vec<usize>,
    /// What its failure counts as.
    pub on_error: OnError,
    /// Its result-cache policy (bundle default applied).
    pub cache: CachePolicy,
    /// Its golden cases.
    pub tests: Vec<TestCase>,
    /// Its result-cache state, when it is cached.
    pub(super) cached: Option<Arc<RuleCache>>,
    /// Why it is not cached, when it is not.
    pub(super) not_cached: Option<String>,
    /// What its evaluations cost lately, for choosing where it runs.
    pub(super) cost: RuleCost,
}

impl std::fmt::Debug for BundleRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleRule")
            .field("rule", &self.rule)
            .field("depends_on", &self.depends_on)
            .field("on_error", &self.on_error)
            .field("cache", &self.cache)
            .field("cached", &self.cached.is_some())
            .finish()
    }
}

impl BundleRule {
    /// Evaluates the rule, through the result cache when it is cached.
    pub fn evaluate(&self, input: &Input, upstream: &[Upstream]) -> Evaluation {
        match &self.cached {
            Some(cache) => cache.evaluate(&self.rule, input, upstream),
            None => self.rule.evaluate_with(input, upstream),
        }
    }

    /// Its result from this host's memory cache, without evaluating or going to Redis:
    /// cheap enough to call on an async worker. `None` when not cached there.
    pub fn cached_in_memory(&self, input: &Input, upstream: &[Upstream]) -> Option<Evaluation> {
        self.cached.as_ref()?.l1_hit(&self.rule, input, upstream)
    }

    /// What evaluating it cost lately, in microseconds ([`RuleCost::read`]), for choosing
    /// where it runs. `None` until it has run, or when it may wait on the network (a Redis
    /// L2 lookup).
    pub(super) fn recent_cost(&self) -> Option<Costs> {
        if self.cached.as_ref().is_some_and(|c| c.has_l2()) {
            return None;
        }
        self.cost.read()
    }

    /// [`BundleRule::evaluate`], noting what it cost for choosing where the rule runs next.
    pub(super) fn run(&self, input: &Input, upstream: &[Upstream]) -> Evaluation {
        let eval = self.evaluate(input, upstream);
        // CPU time, what the rule itself cost: wall time also counts the host being busy
        // (a loaded 2-core server preempts evaluations), which says nothing of the rule.
        // Cache hits cost nothing of the rule's.
        if !eval.cached {
            self.cost.note(eval.metering.cpu_us);
        }
        eval
    }

    /// Whether its results are cached.
    pub fn is_cached(&self) -> bool {
        self.cached.is_some()
    }
}

/// What a rule's evaluations cost lately: the last two's CPU time and a moving average.
#[derive(Debug)]
pub(super) struct RuleCost {
    /// The last evaluation's, in microseconds (`u64::MAX`: none yet).
    last: AtomicU64,
    /// The one before it, in microseconds (`u64::MAX`: none yet).
    before: AtomicU64,
    /// The moving average (weight 1/8, each evaluation counted as at most 4x the average),
    /// in sixteenths of a microsecond, so that it does not creep down by rounding
    /// (`u64::MAX`: none yet).
    typical: AtomicU64,
}

impl Default for RuleCost {
    fn default() -> Self {
        RuleCost {
            last: AtomicU64::new(u64::MAX),
            before: AtomicU64::new(u64::MAX),
            typical: AtomicU64::new(u64::MAX),
        }
    }
}

impl RuleCost {
    /// Notes an evaluation's CPU time (`Metering::cpu_us`, rounded down, so half a
    /// microsecond is added back to the average).
    pub(super) fn note(&self, cpu_us: u64) {
        let previous = self.last.swap(cpu_us.max(1), Ordering::Relaxed);
        self.before.store(previous, Ordering::Relaxed);
        let cost = cpu_us.saturating_mul(16).saturating_add(8);
        let old = self.typical.load(Ordering::Relaxed);
        let new = if old == u64::MAX {
            cost
        } else {
            // A one-off slow evaluation (cold caches, a replaced instance: measured 60-160 us
            // on ~1.5 us rules) counts as 4x the average at most: uncapped, one made twenty
            // tiny rules look worth sharing for the half-dozen evaluations the average took
            // to come back down. A rule turned slow for good still gets there, by 1.375x an
            // evaluation.
            (old.saturating_mul(7) + cost.min(old.saturating_mul(4))) / 8
        };
        self.typical.store(new, Ordering::Relaxed);
    }

    /// Its figures, in microseconds, each read once; `None` until an evaluation was noted.
    pub(super) fn read(&self) -> Option<Costs> {
        let last = self.last.load(Ordering::Relaxed);
        if last == u64::MAX {
            return None;
        }
        // `note` stores the last cost first: a reader between the two stores sees no
        // average yet, and the last cost is the best guess of it.
        let typical = match self.typical.load(Ordering::Relaxed) {
            u64::MAX => last,
            sixteenths => sixteenths.div_ceil(16),
        };
        // The lesser of the last two: one slow evaluation alone says little of the next.
        let recent = last.min(self.before.load(Ordering::Relaxed));
        Some(Costs {
            cautious: recent.max(typical),
            typical,
        })
    }
}

/// A rule's recent costs, in microseconds ([`RuleCost::read`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Costs {
    /// The larger of the typical cost and the lesser of the last two: whether to leave the
    /// calling thread. A rule turned slow leaves it after its second slow evaluation. A
    /// single slow one (cold caches after other work, a replaced instance: 60-160 us on
    /// ~1.5 us rules) does not send the next evaluation, ordinary again, away: when it did,
    /// async `evaluate` of twenty tiny rules interleaved with heavier work hopped to the
    /// blocking pool 0-3 times per 278 evaluations and ran at 0.92-0.98x the sequential
    /// speed.
    pub cautious: u64,
    /// The (capped) average alone: whether a layer is worth sharing. With the last cost in
    /// it, one slow evaluation would get a layer of tiny rules shared, where each rule costs
    /// more (its instance in the other core's cache), keeping the figure high.
    pub typical: u64,
}

/// A verified, compiled bundle, ready to evaluate. Immutable: a new revision is a new
/// `Bundle`. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Bundle {
    pub(super) manifest: Manifest,
    pub(super) rules: Vec<Arc<BundleRule>>,
    pub(super) layers: Vec<Vec<usize>>,
    /// Per layer, whether one of its rules imports WASI (and so may block on the ambient
    /// runtime): asked on every evaluation, so worked out once.
    pub(super) wasi_layers: Vec<bool>,
    pub(super) concurrency: usize,
    pub(super) inline_below_us: u64,
    pub(super) digest: String,
    pub(super) signed_by: Option<TrustedKey>,
    pub(super) source: BundleSource,
}

impl Bundle {
    /// The bundle's name.
    pub fn name(&self) -> &str {
        &self.manifest.bundle.name
    }

    /// The bundle's revision.
    pub fn revision(&self) -> &str {
        &self.manifest.bundle.revision
    }

    /// SHA-256 of the bundle's canonical file listing.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The key that signed it, when a signature was checked.
    pub fn signed_by(&self) -> Option<&TrustedKey> {
        self.signed_by.as_ref()
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The rules, in manifest order.
    pub fn rules(&self) -> &[Arc<BundleRule>] {
        &self.rules
    }

    /// The dependency layers, as rule indices.
    pub fn layers(&self) -> &[Vec<usize>] {
        &self.layers
    }

    /// The bundle's files, with their digests.
    pub fn source(&self) -> &BundleSource {
        &self.source
    }

    /// Where the bundle was loaded from.
    pub fn origin(&self) -> &Path {
        self.source.origin()
    }

    /// What the bundle holds, for people and tools: `rulebox bundle inspect` prints it.
    pub fn describe(&self) -> BundleDescription {
        let name = |i: usize| self.rules[i].rule.name().to_owned();
        BundleDescription {
            bundle: self.name().to_owned(),
            revision: self.revision().to_owned(),
            digest: self.digest.clone(),
            combine: self.manifest.bundle.combine,
            signed: self.signed_by.is_some(),
            signature_file: self.source.files().contains_key(SIGNATURE_FILE),
            rules: self
                .rules
                .iter()
                .map(|r| RuleDescription {
                    name: r.rule.name().to_owned(),
                    component_sha256: r.rule.pre().digest_hex(),
                    reads: r.rule.reads().to_strings(),
                    depends_on: r.depends_on.iter().map(|&d| name(d)).collect(),
                    limits: *r.rule.limits(),
                    on_error: r.on_error,
                    cache: r.cache,
                    cached: r.cached.is_some(),
                    not_cached: r.not_cached.clone(),
                    isolation: r.rule.isolation(),
                    tests: r.tests.len(),
                })
                .collect(),
            layers: self
                .layers
                .iter()
                .map(|l| l.iter().map(|&i| name(i)).collect())
                .collect(),
            tests: self.manifest.tests.len(),
        }
    }
}

/// What a loaded bundle holds ([`Bundle::describe`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BundleDescription {
    /// The bundle's name.
    pub bundle: String,
    /// Its revision.
    pub revision: String,
    /// SHA-256 of its canonical file listing.
    pub digest: String,
    /// How its rules' decisions combine.
    pub combine: Combine,
    /// Whether its signature was verified against a trusted key (false when no key was
    /// given: then it was not checked).
    pub signed: bool,
    /// Whether it carries a `bundle.sig`.
    pub signature_file: bool,
    /// Its rules, in manifest order.
    pub rules: Vec<RuleDescription>,
    /// The dependency layers, by rule name: each layer's rules run concurrently.
    pub layers: Vec<Vec<String>>,
    /// Bundle-level golden cases.
    pub tests: usize,
}

/// One rule of a [`BundleDescription`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleDescription {
    /// The rule's name.
    pub name: String,
    /// SHA-256 of its component.
    pub component_sha256: String,
    /// What it reads.
    pub reads: Vec<String>,
    /// The rules it depends on.
    pub depends_on: Vec<String>,
    /// The limits it runs under (bundle defaults applied).
    pub limits: crate::config::Limits,
    /// What its failure counts as.
    pub on_error: OnError,
    /// Its result-cache policy.
    pub cache: CachePolicy,
    /// Whether its results are cached in this load.
    pub cached: bool,
    /// Why not, when they are not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_cached: Option<String>,
    /// How its evaluations are isolated from one another.
    pub isolation: crate::Isolation,
    /// Its golden cases.
    pub tests: usize,
}

#[cfg(test)]
mod tests {
    use super::{Costs, RuleCost};

    #[test]
    fn a_rules_cost_is_unknown_until_it_ran_then_cautious_and_typical() {
        let cost = RuleCost::default();
        assert_eq!(cost.read(), None);
        // Steady 7 us evaluations (6.5-7.5 us, rounded down to 7 by the metering): the
        // average stays at 7 and does not creep down by rounding.
        for _ in 0..100 {
            cost.note(7);
        }
        let steady = Costs {
            cautious: 8,
            typical: 8,
        };
        assert_eq!(cost.read(), Some(steady));
        // One slow evaluation: the typical figure follows a little (the spike counts as 4x
        // the average, 30 us), the cautious one only as far as that; a second slow one in a
        // row takes the cautious one up at once.
        cost.note(200);
        let spiked = cost.read().unwrap();
        assert!((10..=11).contains(&spiked.typical), "{spiked:?}");
        assert_eq!(spiked.cautious, spiked.typical);
        cost.note(7);
        let after = cost.read().unwrap();
        assert_eq!(after.cautious, after.typical);
        assert!(after.cautious <= 10, "{after:?}");
        cost.note(300);
        cost.note(300);
        assert_eq!(cost.read().unwrap().cautious, 300);
        // A rule turned slow for good: the average follows within a few dozen evaluations.
        for _ in 0..40 {
            cost.note(100);
        }
        assert!(cost.read().unwrap().typical >= 99, "{:?}", cost.read());
    }

    #[test]
    fn a_cost_read_between_the_two_stores_takes_the_last_as_typical() {
        let cost = RuleCost::default();
        cost.last.store(12, std::sync::atomic::Ordering::Relaxed);
        let read = Costs {
            cautious: 12,
            typical: 12,
        };
        assert_eq!(cost.read(), Some(read));
    }
}
